#!/usr/bin/env python3
"""Reshapes rendered deployment files for the standard tools that scripts/check-deploy.sh runs:
they take one document per file (check-jsonschema), plain rule files (promtool), not what
kustomize and Grafana write.

    deploy-manifests.py split RENDERED.yaml OUT_DIR
        Built-in kinds -> OUT_DIR/builtin/<build>.yaml (for kubernetes-validate); each custom
        resource -> OUT_DIR/custom/<group>/<kind>_<version>/<build>-<n>.yaml, whose schema must
        exist as deploy/schemas/<group>/<kind>_<version>.json. <build> is RENDERED's file name,
        so several builds can share OUT_DIR.
    deploy-manifests.py rules RENDERED.yaml OUT.yml
        The groups of every PrometheusRule, as a Prometheus rule file.
    deploy-manifests.py dashboard-rules DASHBOARD.json OUT.yml
        Every panel query of a Grafana dashboard as a recording rule, so promtool parses it.
"""

import json
import os
import re
import sys

import yaml

SCHEMAS = "deploy/schemas"
# Grafana's own variables, replaced by what they stand for in a query Prometheus can parse.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def documents(path):
    with open(path) as handle:
        return [d for d in yaml.safe_load_all(handle) if d]


def is_builtin(api_version):
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    return "." not in group or group.endswith(".k8s.io")


def split(rendered, out_dir):
    build = os.path.basename(rendered).removesuffix(".yaml")
    builtin, missing = [], []
    for index, document in enumerate(documents(rendered)):
        api_version, kind = document.get("apiVersion", ""), document.get("kind", "")
        if is_builtin(api_version):
            builtin.append(document)
            continue
        group, _, version = api_version.partition("/")
        name = f"{group}/{kind.lower()}_{version}"
        if not os.path.isfile(os.path.join(SCHEMAS, name + ".json")):
            missing.append(f"{kind} {api_version} ({document['metadata'].get('name')})")
            continue
        target = os.path.join(out_dir, "custom", name)
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, f"{build}-{index:03}.yaml"), "w") as handle:
            yaml.safe_dump(document, handle, sort_keys=False)
    os.makedirs(os.path.join(out_dir, "builtin"), exist_ok=True)
    with open(os.path.join(out_dir, "builtin", f"{build}.yaml"), "w") as handle:
        yaml.safe_dump_all(builtin, handle, sort_keys=False)
    if missing:
        sys.exit(f"no vendored schema in {SCHEMAS}/ for: {', '.join(missing)}")


def rules(rendered, out):
    groups = []
    for document in documents(rendered):
        if document.get("kind") == "PrometheusRule":
            groups += document["spec"]["groups"]
    if not groups:
        sys.exit(f"{rendered}: no PrometheusRule")
    with open(out, "w") as handle:
        yaml.safe_dump({"groups": groups}, handle, sort_keys=False)


def panel_queries(panels):
    for panel in panels:
        yield from panel_queries(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield panel.get("id"), target["expr"]


def dashboard_rules(dashboard, out):
    with open(dashboard) as handle:
        board = json.load(handle)
    # The dashboard's own variables (e.g. $source) match anything.
    own = {v["name"] for v in (board.get("templating") or {}).get("list") or []}
    own_variable = re.compile(r"\$\{?(\w+)\}?")
    recorded = []
    for index, (panel, expr) in enumerate(panel_queries(board.get("panels") or [])):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        expr = own_variable.sub(lambda m: ".*" if m.group(1) in own else m.group(0), expr)
        recorded.append({"record": f"dashboard:panel_{panel}_{index}", "expr": expr})
    if not recorded:
        sys.exit(f"{dashboard}: no panel queries")
    with open(out, "w") as handle:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}, handle, sort_keys=False)


def main():
    commands = {"split": split, "rules": rules, "dashboard-rules": dashboard_rules}
    if len(sys.argv) != 4 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
