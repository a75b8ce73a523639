"""Writes the Kubernetes manifests under deploy/k8s/ from the services' own config.yaml files (and
the gateway's settings, services/gateway/config.py).

  python -m tools.render_k8s

Every ``${VAR:default}`` a service reads becomes an environment variable of its Deployment:
secrets (database URLs, broker URI, credentials) from Secrets, everything else from the ConfigMap
``swms-config`` (seeded with the config defaults, overridden below for a cluster). Also the broker:
a three-node RabbitmqCluster for the RabbitMQ Cluster Operator, with a PodDisruptionBudget.
Regenerate after changing a config.yaml; tests/static/test_k8s.py fails when the files are out of
date or invalid.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from swms.config import REPO_ROOT
from swms.devkeys import SERVICES

OUT = REPO_ROOT / "deploy" / "k8s"
NAMESPACE = "swms"
IMAGE = "registry.example.gov.cn/swms/swms:1.0.0"
SCALED = {"certificate": (2, 10), "registration": (2, 10), "review": (2, 6)}  # HPA min, max replicas
RESOURCES = {
    "certificate": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "1536Mi"}},
}
DEFAULT_RESOURCES = {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "768Mi"}}

# Values for a cluster where they differ from the single-machine defaults in config.yaml.
CLUSTER_VALUES = {
    "S3_ENDPOINT_URL": "http://minio.swms-infra.svc:9000",
    "S3_PUBLIC_ENDPOINT_URL": "https://files.swms.example.gov.cn",
    "SMTP_HOST": "smtp-relay.swms-infra.svc",
    "SMTP_PORT": "25",
    "SMTP_STARTTLS": "true",
    "AUTH_PUBLIC_KEY_FILE": "/keys/token-signing.pub.pem",
    "AUTH_PRIVATE_KEY_FILE": "/signing/token-signing.pem",
    "REVIEW_CHAINS_FILE": "services/review/chains.yaml",
    "CERT_ALLOW_DEV_KEYS": "false",   # a cluster signs with the authority's keys, mounted from a Secret
    "AMQP_QUEUE_TYPE": "quorum",      # replicated on the RabbitmqCluster's three nodes (rabbitmq.yaml)
}
RABBITMQ = "rabbitmq"   # the RabbitmqCluster; the Cluster Operator names its client Service the same
RABBITMQ_LABELS = {"app.kubernetes.io/name": RABBITMQ}   # on the pods the operator creates
SECRET_SUFFIXES = ("_DB_URL", "_PASSWORD", "_SECRET_KEY", "_ACCESS_KEY", "SMTP_USER")


def config_variables(service: str) -> dict[str, str]:
    text = (REPO_ROOT / "services" / service / "config.yaml").read_text(encoding="utf-8")
    return {name: default for name, default in re.findall(r"\$\{([A-Z0-9_]+):?([^}]*)\}", text)}


def secret_ref(service: str, variable: str) -> dict | None:
    if variable == "AMQP_URI":
        return {"name": "swms-broker", "key": "amqp-uri"}
    if variable.endswith("_DB_URL"):
        return {"name": f"swms-db-{service}", "key": "url"}
    if variable.endswith(SECRET_SUFFIXES) or variable.startswith("S3_") and variable.endswith("KEY"):
        return {"name": "swms-credentials", "key": variable.lower().replace("_", "-")}
    return None


def file_path(service: str, variable: str) -> str | None:
    """Where a *_FILE variable's secret is mounted."""
    if variable.endswith("_SERVICE_TOKEN_FILE"):
        return "/service-token/token"
    if variable in CLUSTER_VALUES:
        return None
    if variable.endswith("_FILE"):
        return f"/secrets/{variable.lower().removesuffix('_file').replace('_', '-')}"
    if variable.endswith("_PATH") and any(word in variable for word in ("KEY", "CERT", "CHAIN")):
        return f"/secrets/{variable.lower().removesuffix('_path').replace('_', '-')}"  # key material
    return None


def secret_file(service: str, variable: str) -> bool:
    """Settings naming a secret file that the manifests mount (not the service token)."""
    return bool(file_path(service, variable)) and not variable.endswith("_SERVICE_TOKEN_FILE") \
        and variable not in CLUSTER_VALUES


def env_for(service: str) -> list[dict]:
    env = []
    for variable in sorted(config_variables(service)):
        secret = secret_ref(service, variable)
        if secret:
            env.append({"name": variable, "valueFrom": {"secretKeyRef": secret}})
            continue
        path = file_path(service, variable)
        if path:
            env.append({"name": variable, "value": path})
        else:
            env.append({"name": variable, "valueFrom": {"configMapKeyRef": {"name": "swms-config", "key": variable}}})
    return env


def volumes_for(service: str) -> tuple[list[dict], list[dict]]:
    volumes = [{"name": "token-keys", "secret": {"secretName": "swms-token-public-key"}},
               {"name": "service-token", "secret": {"secretName": f"swms-service-token-{service}"}},
               {"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "token-keys", "mountPath": "/keys", "readOnly": True},
              {"name": "service-token", "mountPath": "/service-token", "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    if service == "identity":
        volumes.append({"name": "signing-key", "secret": {"secretName": "swms-token-signing-key"}})
        mounts.append({"name": "signing-key", "mountPath": "/signing", "readOnly": True})
    extra_files = [v for v in config_variables(service) if secret_file(service, v)]
    if extra_files:
        volumes.append({"name": "service-secrets", "secret": {"secretName": f"swms-files-{service}"}})
        mounts.append({"name": "service-secrets", "mountPath": "/secrets", "readOnly": True})
    return volumes, mounts


def labels(service: str) -> dict:
    return {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": "swms"}


OPS_PORT = 9100


def probe(path: str, period: int, failures: int) -> dict:
    """Per-pod HTTP probes on the ops endpoint (swms/ops.py): an RPC health call would be answered
    by any replica, and liveness must not fail (and restart every pod) when a database is down."""
    return {"httpGet": {"path": path, "port": "ops"}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}


def security_context() -> dict:
    return {"runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def deployment(service: str) -> dict:
    volumes, mounts = volumes_for(service)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": service, "namespace": NAMESPACE, "labels": labels(service)},
        "spec": {
            "replicas": SCALED.get(service, (1, 1))[0],
            "selector": {"matchLabels": labels(service)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(service),
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(OPS_PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    # Nameko finishes running workers on SIGTERM; give long renders time to end.
                    "terminationGracePeriodSeconds": 60,
                    "containers": [{
                        "name": service, "image": IMAGE,
                        "command": ["/app/deploy/entrypoint.sh"],
                        "env": [{"name": "SWMS_SERVICE", "value": service},
                                {"name": "RUN_MIGRATIONS", "value": "false"},  # the Job migrates
                                {"name": "OPS_PORT", "value": str(OPS_PORT)},
                                {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"}]  # fontconfig's cache
                               + [e for e in env_for(service) if e["name"] != "OPS_PORT"],
                        "ports": [{"name": "ops", "containerPort": OPS_PORT}],
                        "resources": RESOURCES.get(service, DEFAULT_RESOURCES),
                        "startupProbe": probe("/healthz", 5, 24),
                        "readinessProbe": probe("/readyz", 10, 3),
                        "livenessProbe": probe("/healthz", 20, 3),
                        "volumeMounts": mounts,
                        "securityContext": security_context(),
                    }],
                    "volumes": volumes,
                },
            },
        },
    }


def migration_job(service: str) -> dict:
    volumes, mounts = volumes_for(service)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{service}-migrate", "namespace": NAMESPACE, "labels": labels(service)},
        "spec": {
            "backoffLimit": 5, "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels(service)}, "spec": {
                "restartPolicy": "OnFailure",
                "containers": [{
                    "name": "migrate", "image": IMAGE,
                    "command": ["python", "-m", "swms.migrations", service],
                    "env": env_for(service), "volumeMounts": mounts,
                    "resources": DEFAULT_RESOURCES, "securityContext": security_context(),
                }],
                "volumes": volumes,
            }},
        },
    }


def autoscaler(service: str, scale: tuple[int, int] | None = None) -> dict:
    low, high = scale or SCALED[service]
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": service, "namespace": NAMESPACE, "labels": labels(service)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service},
            "minReplicas": low, "maxReplicas": high,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                          "target": {"type": "Utilization", "averageUtilization": 70}}}],
            # Provincial bursts arrive fast and leave slowly: scale up quickly, down gently.
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 30},
                         "scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def rabbitmq_cluster() -> dict:
    """Three RabbitMQ nodes run by the RabbitMQ Cluster Operator (rabbitmq.com/v1beta1), one per
    Kubernetes node: quorum queues keep a copy on each and stay available while two run."""
    return {
        "apiVersion": "rabbitmq.com/v1beta1", "kind": "RabbitmqCluster",
        "metadata": {"name": RABBITMQ, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "swms"}},
        "spec": {
            "replicas": 3,
            "image": "rabbitmq:3.13-management",
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            "persistence": {"storage": "20Gi"},
            "rabbitmq": {"additionalConfig": "\n".join([
                "default_vhost = swms",
                # new quorum queues' leaders spread over the nodes, not all where the declaring client is
                "queue_leader_locator = balanced",
                # a node cut off from the other two stops serving instead of accepting writes it may lose
                "cluster_partition_handling = pause_minority",
                "vm_memory_high_watermark.relative = 0.6",
                "disk_free_limit.absolute = 2GB",
            ]) + "\n"},
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": RABBITMQ_LABELS}, "topologyKey": "kubernetes.io/hostname"}]}},
        },
    }


def rabbitmq_disruption_budget() -> dict:
    """Voluntary evictions (node drains, upgrades) take one RabbitMQ node at a time: two of three
    keep every quorum queue available."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": RABBITMQ, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "swms"}},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": RABBITMQ_LABELS}}}


def config_map() -> dict:
    data = {}
    for service in SERVICES:
        for variable, default in config_variables(service).items():
            if variable == "OPS_PORT":
                continue  # set on each Deployment, next to the probes that use it
            if secret_ref(service, variable) is None and file_path(service, variable) is None:
                data[variable] = CLUSTER_VALUES.get(variable, default)
    for variable, value in gateway_variables().items():
        if secret_ref(GATEWAY, variable) is None and variable not in GATEWAY_FIXED:
            data[variable] = value
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "swms-config", "namespace": NAMESPACE}, "data": dict(sorted(data.items()))}


def secret_templates() -> list[dict]:
    """Placeholders: operators create the real Secrets from their secret store (docs/operations.md)."""
    def secret(name: str, data: dict) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": NAMESPACE,
                             "annotations": {"swms.example.gov.cn/placeholder": "replace before use"}},
                "stringData": data}

    credentials = {}
    for service in SERVICES:
        for variable in config_variables(service):
            ref = secret_ref(service, variable)
            if ref and ref["name"] == "swms-credentials":
                credentials[ref["key"]] = "CHANGE-ME"
    # The RabbitmqCluster's client Service: each (re)connection lands on a ready node. A list of
    # addresses separated by ";" works as well (docs/configuration.md, AMQP_URI).
    secrets = [secret("swms-broker", {"amqp-uri": f"pyamqp://swms:CHANGE-ME@{RABBITMQ}.{NAMESPACE}.svc:5672/swms"}),
               secret("swms-credentials", dict(sorted(credentials.items()))),
               secret("swms-token-public-key", {"token-signing.pub.pem": "CHANGE-ME"}),
               secret("swms-token-signing-key", {"token-signing.pem": "CHANGE-ME"})]
    for service in SERVICES:
        secrets.append(secret(f"swms-db-{service}", {
            "url": f"postgresql+psycopg2://{service}:CHANGE-ME@postgres.swms-infra.svc:5432/{service}"}))
        secrets.append(secret(f"swms-service-token-{service}", {"token": "CHANGE-ME"}))
        files = [v for v in config_variables(service) if secret_file(service, v)]
        if files:
            secrets.append(secret(f"swms-files-{service}",
                                  {file_path(service, v).rsplit("/", 1)[1]: "CHANGE-ME" for v in files}))
    return secrets


# ---- the HTTP gateway: same image, its own command, no database -------------------------------------

GATEWAY = "gateway"
GATEWAY_PORT = 8080
GATEWAY_SCALE = (2, 10)
PUBLIC_HOST = "swms.example.gov.cn"
# The ingress controller's pods: the only peers whose X-Forwarded-For the gateway believes. Narrow
# it to your cluster's pod CIDR (or the controller's own addresses).
GATEWAY_CLUSTER_VALUES = {"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8",
                          # the portal posts uploads to S3_PUBLIC_ENDPOINT_URL (docs/portal.md)
                          "GATEWAY_PORTAL_STORAGE_ORIGINS": "https://files.swms.example.gov.cn"}
GATEWAY_FIXED = {"GATEWAY_HOST": "0.0.0.0", "GATEWAY_PORT": str(GATEWAY_PORT)}   # next to the probes that use them


def gateway_variables() -> dict[str, str]:
    """Every variable the gateway reads (services/gateway/config.py), with its value here."""
    from services.gateway.config import variables

    return {variable: GATEWAY_CLUSTER_VALUES.get(variable, default) for variable, default in variables().items()}


def gateway_env() -> list[dict]:
    env = []
    for variable in gateway_variables():
        secret = secret_ref(GATEWAY, variable)
        if variable in GATEWAY_FIXED:
            env.append({"name": variable, "value": GATEWAY_FIXED[variable]})
        else:
            env.append({"name": variable, "valueFrom": {"secretKeyRef": secret} if secret else
                        {"configMapKeyRef": {"name": "swms-config", "key": variable}}})
    return env


def http_probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}


def gateway_deployment() -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": GATEWAY, "namespace": NAMESPACE, "labels": labels(GATEWAY)},
        "spec": {
            "replicas": GATEWAY_SCALE[0],
            "selector": {"matchLabels": labels(GATEWAY)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(GATEWAY),
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(GATEWAY_PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    # uvicorn stops taking connections on SIGTERM and lets requests in flight end (20 s).
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": GATEWAY, "image": IMAGE,
                        "command": ["python", "-m", "services.gateway"],
                        "env": gateway_env(),
                        "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
                        "resources": DEFAULT_RESOURCES,
                        "startupProbe": http_probe("/healthz", 2, 30),
                        # Ready = AMQP connected and the reply queue consumed: a pod that lost the
                        # broker leaves the Service until it is back, and is not restarted for it.
                        "readinessProbe": http_probe("/readyz", 5, 2),
                        "livenessProbe": http_probe("/healthz", 20, 3),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        "securityContext": security_context(),
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def gateway_service() -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": GATEWAY, "namespace": NAMESPACE, "labels": labels(GATEWAY)},
            "spec": {"selector": labels(GATEWAY),
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def gateway_ingress() -> dict:
    """An example for ingress-nginx: TLS ends here, the gateway gets plain HTTP with the client's
    address in X-Forwarded-For (the controller's Service needs ``externalTrafficPolicy: Local``, or
    the PROXY protocol from the load balancer, to know it: docs/http-api.md)."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": GATEWAY, "namespace": NAMESPACE, "labels": labels(GATEWAY), "annotations": {
            "nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
            "nginx.ingress.kubernetes.io/proxy-body-size": "8m",          # 反馈 with its proof inline
            "nginx.ingress.kubernetes.io/proxy-read-timeout": "30",
            "nginx.ingress.kubernetes.io/client-header-timeout": "10",  # slow clients end at the edge
            "nginx.ingress.kubernetes.io/client-body-timeout": "10",
        }},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": [PUBLIC_HOST], "secretName": "swms-gateway-tls"}],
            "rules": [{"host": PUBLIC_HOST, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": GATEWAY, "port": {"name": "http"}}}}]}}],
        },
    }


def documents() -> dict[str, list[dict]]:
    files = {"namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}],
             "config.yaml": [config_map()],
             "secrets.example.yaml": secret_templates(),
             "rabbitmq.yaml": [rabbitmq_cluster(), rabbitmq_disruption_budget()]}
    for service in SERVICES:
        docs = [deployment(service), migration_job(service)]
        if service in SCALED:
            docs.append(autoscaler(service))
        files[f"{service}.yaml"] = docs
    files["gateway.yaml"] = [gateway_deployment(), gateway_service(), autoscaler(GATEWAY, GATEWAY_SCALE)]
    files["ingress.example.yaml"] = [gateway_ingress()]
    files["kustomization.yaml"] = [{"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                    "namespace": NAMESPACE, "resources": sorted(f for f in files if f != "kustomization.yaml")}]
    return files


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (RabbitMQ's configuration) as literal blocks, readable as written."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def rendered() -> dict[Path, str]:
    header = ("# Generated by `python -m tools.render_k8s` from services/*/config.yaml and "
              "services/gateway/config.py. Do not edit by hand.\n")
    return {OUT / name: header + "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
                                             for d in docs)
            for name, docs in documents().items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.yaml"):
        old.unlink()
    for path, text in rendered().items():
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(rendered())} files under {OUT.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
