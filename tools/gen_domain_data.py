#!/usr/bin/env python3
"""Seeded simulators for the shipped per-domain datasets (data/domains/*.jsonl).

Each writes interaction records in the domain's JSONL format (docs/domains.md,
docs/schemas/*.schema.json), with conversations in the plain words of children's stories so a
tiny base (stories260K) can learn them:

  education  BKT learners (known per-skill prior/learn/guess/slip) answering arithmetic questions,
             each attempt with a tutoring exchange in the tutor's style for that learner
  gaming     NPCs with personalities meeting players of different attitudes
  defi       wallets trading under a geometric-Brownian price simulator, by strategy profile,
             some transactions with an advisor exchange
  general    users chatting about their own topics in their own way

Run: python3 tools/gen_domain_data.py --out data/domains [--seed 7]
The same seed writes byte-identical files.
"""
import argparse
import hashlib
import json
import math
import os
import random

T0 = 1767225600  # 2026-01-01T00:00:00Z

# ---------------------------------------------------------------- education
SKILLS = {  # skill: (prerequisites, p_init, p_learn, p_guess, p_slip)
    "counting": ([], 0.6, 0.30, 0.25, 0.08),
    "addition": (["counting"], 0.35, 0.20, 0.20, 0.10),
    "subtraction": (["addition"], 0.25, 0.15, 0.20, 0.10),
    "multiplication": (["addition"], 0.15, 0.12, 0.15, 0.10),
}
ANIMALS = ["cats", "dogs", "birds", "fish", "frogs", "ducks", "bunnies", "bears"]
NAMES = ["Lily", "Tom", "Mia", "Ben", "Sue", "Max", "Anna", "Sam", "Lucy", "Tim", "Zoe", "Jack"]


def question(rng, skill):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if skill == "counting":
        return f"How many are {a} {rng.choice(ANIMALS)}?", str(a), a, 0
    if skill == "addition":
        return f"What is {a} plus {b}?", str(a + b), a, b
    if skill == "subtraction":
        a, b = max(a, b), min(a, b)
        return f"What is {a} minus {b}?", str(a - b), a, b
    return f"What is {a} times {b}?", str(a * b), a, b


def tutor_reply(skill, correct, right, a, b, name, animal, style):
    if correct:
        praise = {"warm": f"Yes, {name}! That is right. You are so good at {skill}.",
                  "brief": f"Right, {name}. Well done.",
                  "playful": f"Hooray, {name}! You got it, just like a happy little {animal[:-1]}."}[style]
        return praise
    if skill == "counting":
        hint = f"Let us count the {animal} one by one. There are {right}."
    elif skill == "addition":
        hint = f"Think of {a} {animal} and {b} more {animal}. Together they make {right}."
    elif skill == "subtraction":
        hint = f"Start with {a} {animal}. {b} of them go away. Now there are {right}."
    else:
        hint = f"Make {a} groups of {b} {animal}. All together that is {right}."
    opener = {"warm": f"Good try, {name}.", "brief": f"Not quite, {name}.",
              "playful": f"Oh no, {name}, the {animal} got mixed up!"}[style]
    return f"{opener} {hint} Let us try again."


def education(rng):
    records = []
    for i in range(24):
        name = NAMES[i % len(NAMES)]
        learner = f"learner-{i:02d}"
        animal = rng.choice(ANIMALS)
        style = rng.choice(["warm", "brief", "playful"])
        hint_prone = rng.random() < 0.4
        known = {s: rng.random() < p[1] for s, p in SKILLS.items()}
        t = T0 + rng.randint(0, 86400)
        for k in range(48):
            skill = rng.choices(list(SKILLS), weights=[1, 3, 2, 2])[0]
            prereq, _, learn, guess, slip = SKILLS[skill]
            hint = hint_prone and rng.random() < 0.5
            correct = (rng.random() > slip) if known[skill] else (rng.random() < guess + (0.2 if hint else 0))
            q, right, a, b = question(rng, skill)
            answer = right if correct else str(max(0, int(right) + rng.choice([-2, -1, 1, 2])))
            t += rng.randint(300, 7200)
            rec = {"learner": learner, "time": t, "skill": skill, "prerequisites": prereq,
                   "question": q, "answer": answer, "correct": correct, "hint_used": hint,
                   "response_time_s": round(rng.uniform(3, 40) * (1.5 if hint else 1.0), 1),
                   "messages": [
                       {"role": "user", "content": f"{q} I think it is {answer}."},
                       {"role": "assistant",
                        "content": tutor_reply(skill, correct, right, a, b, name, animal, style)}]}
            records.append(rec)
            if not known[skill] and rng.random() < learn:
                known[skill] = True
    records.sort(key=lambda r: (r["time"], r["learner"]))
    return records


# ---------------------------------------------------------------- gaming
NPCS = {
    "npc-baker-rosa": ("cheerful", "bread", "Come in, come in!"),
    "npc-smith-grum": ("grumpy", "swords", "Hmph."),
    "npc-owl-sage": ("wise", "old books", "Hoo, hoo."),
}
PLAYERS = {"player-ana": "friendly", "player-bo": "rude", "player-cy": "trader", "player-di": "curious"}
UTTER = {
    "friendly": ["Hello, friend! How are you today?", "I brought you a flower.", "Thank you for your help!"],
    "rude": ["Give me your best stuff, now.", "You are slow.", "This shop is ugly."],
    "trader": ["What will you give me for this ring?", "I want to trade three apples.", "How much for that?"],
    "curious": ["What is behind the big door?", "Why is the sky so dark tonight?", "Can you tell me a story?"],
}


def npc_reply(npc, mood, attitude, player):
    kind, thing, hello = NPCS[npc]
    p = player.split("-")[1].capitalize()
    if kind == "cheerful":
        r = {"friendly": f"{hello} Oh, {p}, you make my day so bright! Have a warm {thing} roll.",
             "rude": f"Oh dear, {p}, there is no need to shout. Everyone gets fresh {thing} here.",
             "trader": f"For you, {p}, two loaves of {thing} for one apple. A fair deal!",
             "curious": f"Ha! {p}, you always ask the best things. Sit down and have some {thing}."}[attitude]
    elif kind == "grumpy":
        r = {"friendly": f"{hello} Fine, {p}. You may look at the {thing}. Do not touch.",
             "rude": f"{hello} Out, {p}. I do not sell {thing} to loud fools.",
             "trader": f"{hello} Ten gold, {p}. My {thing} are worth it. No less.",
             "curious": f"{hello} Too many questions, {p}. I make {thing}. That is all."}[attitude]
    else:
        r = {"friendly": f"{hello} Kind {p}, your heart is good. Read my {thing} when you like.",
             "rude": f"{hello} Anger is a heavy bag, {p}. Put it down and rest.",
             "trader": f"{hello} Knowledge is the best trade, {p}. I will give you a page of my {thing}.",
             "curious": f"{hello} A fine question, {p}. The answer is in my {thing}. Listen."}[attitude]
    return r


def gaming(rng):
    records = []
    t = T0
    for _ in range(180):
        npc = rng.choice(list(NPCS))
        player = rng.choice(list(PLAYERS))
        attitude = PLAYERS[player]
        utter = rng.choice(UTTER[attitude])
        t += rng.randint(600, 20000)
        change = {"friendly": 0.1, "rude": -0.2, "trader": 0.02, "curious": 0.05}[attitude]
        if NPCS[npc][0] == "grumpy":
            change -= 0.05
        action = {"friendly": "greet", "rude": "refuse", "trader": "trade", "curious": "tell_story"}[attitude]
        records.append({"npc": npc, "player": player, "time": t, "utterance": utter,
                        "reply": npc_reply(npc, None, attitude, player), "action": action,
                        "affinity_change": round(change + rng.uniform(-0.03, 0.03), 3)})
    return records


# ---------------------------------------------------------------- defi
def keccak_like_hash(rng):
    return "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(64))


WALLETS = {  # address: profile
    "0x1111111111111111111111111111111111111111": "liquidity",
    "0x2222222222222222222222222222222222222222": "lender",
    "0x3333333333333333333333333333333333333333": "degen",
}
ADVICE = {  # each reply names the move class first ("Next: <class>."), as the objective scores it
    "liquidity": "Next: LP provision. The {pool} pool suits you. Keep your range wide and watch the fees.",
    "lender": "Next: lending. Supply {token} on {protocol} and keep your loan small.",
    "degen": "Next: leveraged trading. Be careful: set a stop before you open a long on {token}.",
}


def defi(rng):
    records = []
    price = {"ETH": 3000.0, "WBTC": 60000.0, "SOL": 150.0}
    t = T0
    for step in range(90):
        t += rng.randint(3600, 86400)
        for k in price:  # geometric Brownian motion, daily volatility 4%
            price[k] *= math.exp(rng.gauss(0, 0.04))
        for address, profile in WALLETS.items():
            token = rng.choice(list(price))
            if profile == "liquidity":
                action, protocol, pool = rng.choice([("add_liquidity", "uniswap-v3", f"{token}/USDC"),
                                                     ("remove_liquidity", "uniswap-v3", f"{token}/USDC"),
                                                     ("add_liquidity", "curve", "3pool")])
                tokens, amount, lev = [token, "USDC"], rng.uniform(500, 3000), 1
            elif profile == "lender":
                action, protocol, pool = rng.choice([("supply", "aave-v3", "USDC"), ("withdraw", "aave-v3", "USDC"),
                                                     ("supply", "compound", "DAI"), ("borrow", "aave-v3", "ETH")])
                tokens, amount, lev = [pool], rng.uniform(200, 1500), 1
            else:
                action, protocol, pool = rng.choice([("open_long", "gmx", f"{token}-PERP"),
                                                     ("close_position", "gmx", f"{token}-PERP"),
                                                     ("swap", "uniswap-v3", f"{token}/USDC")])
                tokens = [token] if action != "swap" else ["USDC", token]
                amount, lev = rng.uniform(1000, 8000), (rng.choice([3, 5, 10]) if action == "open_long" else 1)
            rec = {"address": address, "time": t, "hash": keccak_like_hash(rng), "protocol": protocol,
                   "pool": pool, "action": action, "tokens": tokens, "amount_usd": round(amount, 2),
                   "leverage": lev}
            if action in ("close_position", "remove_liquidity", "withdraw"):
                rec["pnl_usd"] = round(amount * rng.gauss(0.01, 0.08), 2)
            if step % 2 == 0:
                rec["messages"] = [
                    {"role": "user", "content": f"My last move: {action.replace('_', ' ')} on {protocol}. What kind of move do I make next?"},
                    {"role": "assistant", "content": ADVICE[profile].format(pool=pool, token=token, protocol=protocol)}]
            records.append(rec)
    return records


# ---------------------------------------------------------------- general
USERS = {
    "user-gardener": ("garden", ["tomatoes", "roses", "carrots", "sunflowers"],
                      "Water your {x} in the morning and give them lots of sun. They will grow big and happy."),
    "user-sailor": ("boat", ["sails", "ropes", "the anchor", "the mast"],
                    "Check {x} before you go out to sea. A good sailor keeps the boat ready."),
    "user-baker": ("kitchen", ["cookies", "bread", "cake", "pie"],
                   "For the best {x}, mix slowly and bake until golden. Let it cool before you eat."),
}


def general(rng):
    records = []
    t = T0
    for _ in range(150):
        user = rng.choice(list(USERS))
        place, things, answer = USERS[user]
        x = rng.choice(things)
        t += rng.randint(600, 40000)
        records.append({"user": user, "time": t, "messages": [
            {"role": "user", "content": f"Can you help me with my {x} in the {place}?"},
            {"role": "assistant", "content": answer.format(x=x)}]})
    return records


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=7, help="seed of every simulator")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, sim in [("education", education), ("gaming", gaming), ("defi", defi), ("general", general)]:
        rng = random.Random(f"{args.seed}-{name}")
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in sim(rng))
        path = os.path.join(args.out, f"{name}.jsonl")
        with open(path + ".tmp", "w") as f:
            f.write(lines)
        os.replace(path + ".tmp", path)
        print(f"{path}: {lines.count(chr(10))} records, sha256 {hashlib.sha256(lines.encode()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
