#!/usr/bin/python3
"""Independent check of generated documents (tests/constrain/property_test.cc).

usage: validate_json.py SCHEMAS.json DOCS.jsonl

SCHEMAS.json is a JSON array of schemas; each line of DOCS.jsonl is {"schema": index,
"doc": text}. Every doc must parse as JSON (json.loads) and be valid against its schema under
Draft 2020-12 (Debian's python3-jsonschema). Exits 0 when all are, 1 with a message per failure
(at most 20 shown) otherwise, 2 on bad input.
"""
import json
import sys

import jsonschema


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        schemas = json.load(f)
    validators = []
    for i, schema in enumerate(schemas):
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            print(f"schema {i} is not a valid Draft 2020-12 schema: {e.message}")
            return 2
        validators.append(jsonschema.Draft202012Validator(schema))
    failures = 0
    count = 0
    with open(sys.argv[2], encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            record = json.loads(line)
            index, text = record["schema"], record["doc"]
            count += 1
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as e:
                failures += 1
                if failures <= 20:
                    print(f"line {line_number} (schema {index}): not JSON ({e}): {text!r}")
                continue
            errors = list(validators[index].iter_errors(doc))
            if errors:
                failures += 1
                if failures <= 20:
                    print(f"line {line_number} (schema {index}): {errors[0].message} "
                          f"at {list(errors[0].absolute_path)}: {text!r}")
    print(f"{count} documents, {failures} invalid")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
