#!/usr/bin/python3
"""Golden chat-template renderings for tests/tokenizer/chat_template_test.cc.

Renders conversations with the real Jinja template texts, in the same Jinja environment
transformers' apply_chat_template uses (sandboxed, trim_blocks, lstrip_blocks, loopcontrols,
raise_exception), and writes tests/data/tokenizer/chat_templates.json.

Run with Debian's Jinja2 (apt-get install -y python3-jinja2):
  /usr/bin/python3 tools/gen_chat_template_fixtures.py

Template sources: Qwen3's is read from the shared assets (tokenizers/qwen3/chat_template.jinja);
the others are the texts published in the models' tokenizer_config.json, copied below.
"""
import json
import os
import pathlib

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parent.parent
ASSETS = pathlib.Path(os.environ.get("BITDELTA_SHARED_ASSETS", ROOT.parent / "shared" / "assets"))

# Plain ChatML (e.g. teknium/OpenHermes-2.5, many ChatML fine-tunes).
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen/Qwen2-7B-Instruct: ChatML with a default system prompt.
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# meta-llama/Meta-Llama-3-8B-Instruct (3.0).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# meta-llama/Llama-2-7b-chat-hf.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n'"
    " + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
    "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
# mistralai/Mistral-7B-Instruct-v0.2 and Mixtral-8x7B-Instruct-v0.1.
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# mistralai/Mistral-7B-Instruct-v0.1: the same with a space after each answer's EOS.
MISTRAL_V01 = MISTRAL.replace("{{ message['content'] + eos_token}}",
                              "{{ message['content'] + eos_token + ' ' }}")

# meta-llama/Llama-3.1-8B-Instruct (tokenizer_config.json, July 2024).
LLAMA31 = r'''{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
'''

TEMPLATES = {
    "qwen3": {"format": "Qwen3", "bos": "", "eos": "<|im_end|>",
              "source": (ASSETS / "tokenizers/qwen3/chat_template.jinja").read_text()},
    "chatml": {"format": "ChatML", "bos": "", "eos": "<|im_end|>", "source": CHATML},
    "qwen2": {"format": "ChatML", "bos": "", "eos": "<|im_end|>", "source": QWEN2},
    "llama3": {"format": "Llama-3", "bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
               "source": LLAMA3},
    "llama31": {"format": "Llama-3.1", "bos": "<|begin_of_text|>", "eos": "<|eot_id|>",
                "source": LLAMA31},
    "llama2": {"format": "Llama-2", "bos": "<s>", "eos": "</s>", "source": LLAMA2},
    "mistral": {"format": "Mistral", "bos": "<s>", "eos": "</s>", "source": MISTRAL},
    "mistral_v01": {"format": "Mistral", "bos": "<s>", "eos": "</s>", "source": MISTRAL_V01},
}


def msg(role, content, reasoning=None):
    m = {"role": role, "content": content}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    return m


CONVERSATIONS = {
    "system_user": [msg("system", "You are a helpful assistant."), msg("user", "Hello!")],
    "user_only": [msg("user", "What is 2+2?")],
    "multi_turn": [
        msg("system", "Be brief."),
        msg("user", "Hi"),
        msg("assistant", "Hello! How can I help?"),
        msg("user", "Tell me a joke."),
    ],
    "multi_turn_no_system": [
        msg("user", "Hi"),
        msg("assistant", "Hello!"),
        msg("user", "Bye"),
        msg("assistant", "Goodbye!"),
    ],
    "whitespace": [
        msg("system", "  padded system \n"),
        msg("user", "\n  spaced question?  \n\n"),
        msg("assistant", "  answer with spaces  "),
        msg("user", "ok\t"),
    ],
    "unicode": [msg("user", "Привет! 你好 😀 café")],
    "reasoning_last": [
        msg("user", "Why is the sky blue?"),
        msg("assistant", "Rayleigh scattering.", "\nShort wavelengths scatter more.\n"),
    ],
    "reasoning_history": [
        msg("user", "First question"),
        msg("assistant", "First answer", "first thoughts"),
        msg("user", "Second question"),
        msg("assistant", "Second answer", "second thoughts"),
    ],
    "think_in_content": [
        msg("user", "Q1"),
        msg("assistant", "<think>\nold reasoning\n</think>\n\nA1"),
        msg("user", "Q2"),
        msg("assistant", "<think>\nnew reasoning\n\n</think>\n\n\nA2"),
    ],
    "assistant_after_last_user_no_reasoning": [
        msg("user", "Q"),
        msg("assistant", "partial"),
        msg("assistant", "more", "thinking here"),
    ],
    "system_later": [
        msg("system", "First system."),
        msg("user", "Hi"),
        msg("system", "Another system."),
        msg("user", "Again"),
    ],
    "system_then_assistant": [msg("system", "S"), msg("assistant", "A")],
}


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city — température °C",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "precision": {"type": "number", "minimum": 0.5, "exclusiveMaximum": 1e-07}},
        "required": ["city"], "additionalProperties": False}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
        "strict": {"type": "boolean"}, "filter": {"type": ["object", "null"]}}}}}


def call(id_, name, arguments):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


# Conversations with tools (Qwen3 and Llama 3.1: the other supported templates define none).
TOOL_CONVERSATIONS = {
    "tools_user": ([WEATHER], [msg("user", "Weather in Paris?")]),
    "tools_system_two": ([WEATHER, SEARCH], [msg("system", "Be brief."),
                                             msg("user", "Weather in Paris?")]),
    "tools_round_trip": ([WEATHER, SEARCH], [
        msg("user", "Weather in Paris and Rome?"),
        {"role": "assistant", "content": "",
         "tool_calls": [call("call_1", "get_weather", "{\"city\": \"Paris\"}"),
                        call("call_2", "get_weather", "{\"city\": \"Rome\", \"days\": 2}")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 °C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "{\"temp\": 21}"},
    ]),
    "tools_text_then_call": ([SEARCH], [
        msg("user", "Find cats"),
        {"role": "assistant", "content": "Let me search.",
         "tool_calls": [call("c", "search", "{\"query\": \"cats\", \"tags\": []}")]},
        {"role": "tool", "tool_call_id": "c", "content": "3 results"},
        msg("assistant", "Found 3."),
        msg("user", "Thanks"),
    ]),
}


def render(source, messages, add_generation_prompt, enable_thinking, bos, eos, tools=None):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        enable_thinking=enable_thinking, bos_token=bos, eos_token=eos, tools=tools)


def main():
    cases = []
    for name, template in TEMPLATES.items():
        for conv_name, messages in CONVERSATIONS.items():
            for add_generation_prompt in (True, False):
                for enable_thinking in ((True, False) if name == "qwen3" else (True,)):
                    case = {"template": name, "conversation": conv_name, "messages": messages,
                            "add_generation_prompt": add_generation_prompt,
                            "enable_thinking": enable_thinking}
                    try:
                        case["rendered"] = render(template["source"], messages,
                                                  add_generation_prompt, enable_thinking,
                                                  template["bos"], template["eos"])
                    except jinja2.exceptions.TemplateError as e:
                        case["error"] = str(e)
                    cases.append(case)
    for name in ("qwen3", "llama31"):
        template = TEMPLATES[name]
        for conv_name, (tools, messages) in TOOL_CONVERSATIONS.items():
            if name == "llama31":
                # Hugging Face's convention for Llama: arguments as a mapping, not JSON text.
                messages = [dict(m, tool_calls=[
                    dict(c, function=dict(c["function"],
                                          arguments=json.loads(c["function"]["arguments"])))
                    for c in m["tool_calls"]]) if "tool_calls" in m else m for m in messages]
            for add_generation_prompt in (True, False):
                for enable_thinking in ((True, False) if name == "qwen3" else (True,)):
                    case = {"template": name, "conversation": conv_name, "tools": tools,
                            "messages": messages, "add_generation_prompt": add_generation_prompt,
                            "enable_thinking": enable_thinking}
                    try:
                        case["rendered"] = render(template["source"], messages,
                                                  add_generation_prompt, enable_thinking,
                                                  template["bos"], template["eos"], tools)
                    except jinja2.exceptions.TemplateError as e:
                        case["error"] = str(e)
                    cases.append(case)
    out = ROOT / "tests/data/tokenizer/chat_templates.json"
    out.write_text(json.dumps({"templates": TEMPLATES, "cases": cases}, indent=1,
                              ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
