"""deploy/k8s: generated from the services' config, valid against the Kubernetes schemas (and the
RabbitmqCluster against the Cluster Operator's fields, tests/static/schemas/), complete."""
from __future__ import annotations

import copy
import json
import urllib.parse
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from swms.config import REPO_ROOT
from swms.devkeys import SERVICES
from services.gateway import config as gateway_config
from swms.queues import broker_urls
from tools.render_k8s import OUT, RABBITMQ, config_variables, documents, rendered

K8S_VERSION = "1.30.0"
CUSTOM_SCHEMAS = {("rabbitmq.com/v1beta1", "RabbitmqCluster"):
                  Path(__file__).parent / "schemas" / "rabbitmqcluster-rabbitmq-v1beta1.json"}


def validate(doc: dict) -> None:
    """kubernetes-validate's schema for built-in kinds; ours for the operator's custom resource, with
    its Kubernetes types (metadata, resources, affinity) from kubernetes-validate's definitions."""
    custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if custom is None:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return
    definitions = json.loads((Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                              / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text())
    schema = json.loads(custom.read_text())
    registry = referencing.Registry().with_resources([
        ("https://kubernetes.io/api/_definitions.json", referencing.Resource.from_contents(definitions))])
    jsonschema.Draft202012Validator(
        {**schema, "$id": "https://kubernetes.io/api/rabbitmqcluster.json"}, registry=registry).validate(doc)


def manifests() -> list[dict]:
    loaded = []
    for path in sorted(OUT.glob("*.yaml")):
        loaded.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return loaded


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def test_committed_manifests_are_current():
    stale = [p.name for p, text in rendered().items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    extra = sorted({p.name for p in OUT.glob("*.yaml")} - {p.name for p in rendered()})
    assert (stale, extra) == ([], []), "run: python -m tools.render_k8s"


@pytest.mark.parametrize("doc", [d for d in manifests() if d["kind"] != "Kustomization"],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_valid_against_kubernetes_schema(doc):
    validate(doc)


@pytest.mark.parametrize("breakage", [
    lambda spec: spec.update(replicas="three"),
    lambda spec: spec.update(replica=3),                        # a misspelt field the API server would drop
    lambda spec: spec["rabbitmq"].update(additionalPlugins=["rabbitmq management"]),
    lambda spec: spec["affinity"]["podAntiAffinity"].update(requiredDuringScheduling=[]),   # Kubernetes type
], ids=["replicas-not-a-number", "misspelt-field", "bad-plugin-name", "bad-affinity"])
def test_the_schema_check_rejects_a_broken_rabbitmq_cluster(breakage):
    broken = copy.deepcopy(by_kind("RabbitmqCluster")[RABBITMQ])
    validate(broken)   # so the breakage is what fails below
    breakage(broken["spec"])
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_rabbitmq_runs_as_three_nodes_one_per_machine_and_the_services_use_quorum_queues():
    cluster = by_kind("RabbitmqCluster")[RABBITMQ]
    assert cluster["spec"]["replicas"] == 3
    [rule] = cluster["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    budget = by_kind("PodDisruptionBudget")[RABBITMQ]
    assert budget["spec"]["maxUnavailable"] == 1
    assert rule["labelSelector"]["matchLabels"] == budget["spec"]["selector"]["matchLabels"] == \
        {"app.kubernetes.io/name": RABBITMQ}   # the label the operator puts on its pods
    assert by_kind("ConfigMap")["swms-config"]["data"]["AMQP_QUEUE_TYPE"] == "quorum"
    uri = by_kind("Secret")["swms-broker"]["stringData"]["amqp-uri"]
    assert {urllib.parse.urlsplit(url).hostname for url in broker_urls(uri)} == {f"{RABBITMQ}.swms.svc"}


def test_the_schema_check_rejects_a_broken_deployment():
    broken = copy.deepcopy(by_kind("Deployment")["certificate"])
    broken["spec"]["replicas"] = "two"
    broken["spec"]["template"]["spec"]["containers"][0]["unknownField"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_one_deployment_and_migration_job_per_service():
    assert set(by_kind("Deployment")) == set(SERVICES) | {"gateway"}   # the gateway has no database
    assert set(by_kind("Job")) == {f"{s}-migrate" for s in SERVICES}
    for service, job in by_kind("Job").items():
        assert job["spec"]["template"]["spec"]["containers"][0]["command"] == \
            ["python", "-m", "swms.migrations", service.removesuffix("-migrate")]


def test_autoscaled_services():
    hpas = by_kind("HorizontalPodAutoscaler")
    assert set(hpas) == {"certificate", "registration", "review", "gateway"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_every_config_variable_is_provided_and_every_reference_resolves():
    config_map = by_kind("ConfigMap")["swms-config"]["data"]
    secrets = {name: set(doc["stringData"]) for name, doc in by_kind("Secret").items()}
    for service, deployment in by_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        if service == "gateway":
            assert set(env) == set(gateway_config.variables())
        else:
            assert set(config_variables(service)) <= set(env), service
            assert env["SWMS_SERVICE"]["value"] == service
        for entry in env.values():
            ref = entry.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["key"] in config_map, (service, entry["name"])
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["key"] in secrets[ref["secretKeyRef"]["name"]], (service, entry["name"])
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, (service, volume["name"])
        assert ("AUTH_PRIVATE_KEY_FILE" in env) is (service == "identity")


def test_probes_and_security():
    for service, deployment in by_kind("Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert {p["name"] for p in container["ports"]} == ({"http"} if service == "gateway" else {"ops"})
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_kustomization_lists_every_file():
    kustomization = yaml.safe_load((OUT / "kustomization.yaml").read_text(encoding="utf-8").split("\n", 1)[1])
    assert sorted(kustomization["resources"]) == sorted(p.name for p in OUT.glob("*.yaml") if p.name != "kustomization.yaml")
    assert set(documents()) == {p.name for p in OUT.glob("*.yaml")}
    assert (REPO_ROOT / "docs" / "operations.md").exists()


def test_gateway_is_served_behind_an_ingress_with_tls_and_the_real_client_address():
    deployment = by_kind("Deployment")["gateway"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["command"] == ["python", "-m", "services.gateway"]
    port = container["ports"][0]["containerPort"]
    assert env["GATEWAY_PORT"]["value"] == str(port) and env["GATEWAY_HOST"]["value"] == "0.0.0.0"
    assert env["AMQP_URI"]["valueFrom"]["secretKeyRef"]["name"] == "swms-broker"
    assert container["startupProbe"]["httpGet"]["port"] == container["readinessProbe"]["httpGet"]["port"] == "http"
    # X-Forwarded-For is believed from the ingress controller's pods only, and the setting is valid.
    config_map = by_kind("ConfigMap")["swms-config"]["data"]
    settings = gateway_config.Settings.from_env({name: config_map[name] for name in config_map
                                                 if name in gateway_config.variables()})
    assert settings.trusted_proxies and settings.cors_origins == ()
    service = by_kind("Service")["gateway"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = by_kind("Ingress")["gateway"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "gateway", "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
