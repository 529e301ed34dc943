#!/usr/bin/env python3
"""Checks deploy/ without a container engine: what can be checked is checked.

- every YAML and JSON file under deploy/ parses;
- each Kustomize overlay builds (`kubectl kustomize`) and its output validates against the
  Kubernetes schemas offline (`kubernetes-validate`, PyPI);
- the compose file validates against the compose specification schema (`check-jsonschema`'s
  vendored copy, PyPI);
- `promtool check rules` passes on the alert rules (Debian's `prometheus` package);
- the Dockerfile is multi-stage, runs as a non-root user and has a healthcheck;
- every alert's runbook link names a heading of docs/operations.md;
- with `--metrics FILE` (a `/metrics` scrape): every herald_* metric the dashboard and the
  alerts use exists in it.

Run by tests/deploy.rs after a small campaign; on its own: `python3 deploy/check.py`.
Exit status 0 when everything passed, 1 with one line per failure otherwise; a missing tool is
a failure (`--allow-missing-tools` turns it into a warning, for machines without them).
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.31"
METRIC = re.compile(r"\bherald_[a-z0-9_]+\b")


class Checks:
    def __init__(self, allow_missing_tools):
        self.failures = []
        self.allow_missing = allow_missing_tools

    def fail(self, what):
        self.failures.append(what)
        print(f"FAIL {what}")

    def ok(self, what):
        print(f"ok   {what}")

    def tool(self, name, hint):
        found = shutil.which(name)
        if not found:
            message = f"{name} not found ({hint})"
            if self.allow_missing:
                print(f"SKIP {message}")
            else:
                self.fail(message)
        return found

    def run(self, what, argv, **kw):
        result = subprocess.run(argv, capture_output=True, text=True, **kw)
        if result.returncode == 0:
            self.ok(what)
        else:
            self.fail(f"{what}: {(result.stdout + result.stderr).strip()[-2000:]}")
        return result


def parse_all(c):
    import yaml

    for path in sorted(DEPLOY.rglob("*")):
        rel = path.relative_to(ROOT)
        try:
            if path.suffix in (".yaml", ".yml"):
                list(yaml.safe_load_all(path.read_text()))
            elif path.suffix == ".json":
                json.loads(path.read_text())
            else:
                continue
        except Exception as e:  # noqa: BLE001 - any parse error is the finding
            c.fail(f"{rel} does not parse: {e}")
            continue
        c.ok(f"{rel} parses")


def kubernetes(c):
    if not c.tool("kubectl", "kubectl kustomize builds the overlays") or not c.tool(
        "kubernetes-validate", "pip install kubernetes-validate"
    ):
        return
    for overlay in sorted((DEPLOY / "k8s" / "overlays").iterdir()):
        built = c.run(f"kustomize build {overlay.relative_to(ROOT)}", ["kubectl", "kustomize", str(overlay)])
        if built.returncode != 0:
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as out:
            out.write(built.stdout)
        c.run(
            f"{overlay.name}: manifests valid for Kubernetes {KUBERNETES_VERSION}",
            ["kubernetes-validate", "--strict", "--kubernetes-version", KUBERNETES_VERSION, out.name],
        )
        kinds = set(re.findall(r"^kind: (\w+)$", built.stdout, re.M))
        for kind in ("Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Service", "ConfigMap"):
            if kind not in kinds:
                c.fail(f"{overlay.name}: no {kind} in the build")


def compose(c):
    if c.tool("check-jsonschema", "pip install check-jsonschema"):
        c.run(
            "compose.yaml valid against the compose specification",
            ["check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose" / "compose.yaml")],
        )


def prometheus(c):
    if c.tool("promtool", "apt-get install prometheus"):
        c.run("promtool check rules alerts.yml", ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")])


def dockerfile(c):
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    checks = [
        (len(froms) >= 2, "Dockerfile is multi-stage"),
        (bool(users) and users[-1].split(":")[0] not in ("root", "0"), "Dockerfile runs as a non-root user"),
        (re.search(r"^HEALTHCHECK\s", text, re.M) is not None, "Dockerfile has a healthcheck"),
    ]
    for passed, what in checks:
        c.ok(what) if passed else c.fail(what)


def anchors(markdown):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#+\s+(.*)$", line)
        if m:
            out.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def runbooks(c):
    import yaml

    headings = anchors((ROOT / "docs" / "operations.md").read_text())
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = rule.get("annotations", {}).get("runbook_url", "")
            anchor = url.partition("#")[2]
            if not url.startswith("docs/operations.md#") or anchor not in headings:
                c.fail(f"alert {rule['alert']}: runbook_url {url!r} names no heading of docs/operations.md")
            else:
                c.ok(f"alert {rule['alert']}: runbook {anchor}")


def used_metrics():
    """herald_* names in the dashboard's queries and the alerts' expressions."""
    import yaml

    used = {}
    dashboard = json.loads((DEPLOY / "grafana" / "herald.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in METRIC.findall(target["expr"]):
                used.setdefault(name, set()).add(f"panel {panel['title']!r}")
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in METRIC.findall(rule["expr"]):
                used.setdefault(name, set()).add(f"alert {rule['alert']}")
    return used


def metrics_exist(c, scrape_path):
    exposed = set()
    for line in pathlib.Path(scrape_path).read_text().splitlines():
        if line and not line.startswith("#"):
            exposed.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    used = used_metrics()
    if not used:
        c.fail("the dashboard and alerts name no herald_* metric")
    for name, users in sorted(used.items()):
        if name in exposed:
            c.ok(f"metric {name} exists")
        else:
            c.fail(f"metric {name} (used by {', '.join(sorted(users))}) is not in the scrape")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", help="a /metrics scrape to check the dashboard and alerts against")
    parser.add_argument("--allow-missing-tools", action="store_true")
    args = parser.parse_args()
    c = Checks(args.allow_missing_tools)
    parse_all(c)
    kubernetes(c)
    compose(c)
    prometheus(c)
    dockerfile(c)
    runbooks(c)
    if args.metrics:
        metrics_exist(c, args.metrics)
    if c.failures:
        print(f"{len(c.failures)} check(s) failed")
        return 1
    print("all deploy checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
