#!/usr/bin/env python3
"""Validates every line of a JSONL file against a JSON Schema (Debian's python3-jsonschema).

Usage: /usr/bin/python3 tools/validate_jsonl.py SCHEMA.json FILE.jsonl
Prints one line per record, "ok" or "invalid: <reason>", so a test can compare the schema's
verdicts with the C++ validator's. Exit status 0 unless the schema itself is broken.
"""
import json
import sys

import jsonschema


def main():
    schema = json.load(open(sys.argv[1]))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for line in open(sys.argv[2]):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"invalid: not JSON ({e})")
            continue
        errors = sorted(validator.iter_errors(record), key=lambda e: list(e.path))
        print("ok" if not errors else f"invalid: {errors[0].message}")


if __name__ == "__main__":
    main()
