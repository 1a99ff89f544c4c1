#!/usr/bin/env python3
"""Turns operators' CustomResourceDefinitions into the JSON schemas that scripts/check-deploy.sh
validates custom resources against (deploy/schemas/<group>/<kind>_<version>.json, the layout
kubeconform and the CRDs catalog use).

    python3 scripts/vendor-schemas.py deploy/schemas CRD.yaml [CRD.yaml ...]

Each served version's openAPIV3Schema is written as JSON Schema, made strict the way the API
server prunes: an object that lists its properties and does not preserve unknown fields admits
no other property, so a misspelt field is an error here rather than silently dropped by the
cluster. Needs PyYAML (the deploy tools' venv has it).
"""

import json
import os
import sys

import yaml


def ecma_pattern(pattern):
    """Go's inline `(?i)`, which ECMA-262 regexes (JSON Schema's) lack, as `[xX]` classes for
    the letters outside character classes (the only use in the vendored CRDs: `(?i)(abort|warn)`)."""
    if "(?i)" not in pattern:
        return pattern
    out, escaped, in_class = [], False, False
    for char in pattern.replace("(?i)", ""):
        if not escaped and not in_class and char.isascii() and char.isalpha():
            out.append(f"[{char.lower()}{char.upper()}]")
        else:
            out.append(char)
            in_class = (in_class or char == "[") and not (char == "]" and not escaped)
        escaped = char == "\\" and not escaped
    return "".join(out)


def strict(node):
    """The OpenAPI v3 subset of a CRD as JSON Schema, closed where the API server prunes."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    # Descriptions are documentation, not constraints: left out to keep the vendored files small.
    out = {
        key: strict(value)
        for key, value in node.items()
        if not (key == "description" and isinstance(value, str))
    }
    if isinstance(out.get("pattern"), str):
        out["pattern"] = ecma_pattern(out["pattern"])
    if out.pop("x-kubernetes-int-or-string", False):
        # Kubernetes' IntOrString (ports, percentages) carries no `type` of its own.
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserves = out.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and "additionalProperties" not in out and not preserves:
        out["additionalProperties"] = False
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    target = sys.argv[1]
    for path in sys.argv[2:]:
        with open(path) as handle:
            documents = [d for d in yaml.safe_load_all(handle) if d]
        for crd in documents:
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"].lower()
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                os.makedirs(os.path.join(target, group), exist_ok=True)
                out = os.path.join(target, group, f"{kind}_{version['name']}.json")
                with open(out, "w") as handle:
                    json.dump(schema, handle, indent=1, sort_keys=True)
                    handle.write("\n")
                print(out)


if __name__ == "__main__":
    main()
