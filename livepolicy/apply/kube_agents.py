"""`apply --agents kube`: the agents of the Helm chart's DaemonSet, found through the API.

The chart (deploy/helm/livepolicy) runs one agent pod per managed node, labelled with its
selector labels (`app.kubernetes.io/name=livepolicy`, `app.kubernetes.io/component=agent`,
plus the release's `app.kubernetes.io/instance`). Everything apply needs is in those
pods and the Secrets they mount, so nothing has to be copied into an AGENTS.yaml:

- where: each Ready pod's `status.podIP` (with the chart's default `hostNetwork: true`
  that is the node's InternalIP, `status.hostIP`) and the `containerPort` named `agent`;
  `https` when the agent's arguments carry `--tls-cert` or `--tls-self-signed`;
- the credential, one per node (agent/auth.py): when the agent takes ServiceAccount
  tokens (`--auth-allow system:serviceaccount:NS:NAME`, the chart's default), a token of
  that account minted for this node's audience alone (TokenRequest); else the Secret key
  behind its `--token-file`; or `--agent-token-file`;
- whom to trust: with `--tls-self-signed` (the chart's default `agent.tls.identity:
  perNode`) that node's own certificate, which its agent writes on its pod
  (annotation `livepolicy.io/agent-certificate`, agent/tls_identity.py) before it
  listens; a pod without it is not counted Ready. Else the CA: the Secret key behind
  `--tls-ca` (`<release>-livepolicy-agent-tls`, key `ca.crt`), or `--agent-ca-file`;
  with `--tls-client-ca` (the chart's `agent.tls.requireClientCert`) the same Secret's
  `tls.crt`/`tls.key` as the client certificate.

Secret names and keys are read from the pod's volumes rather than assumed, so
`agent.existingTokenSecret`, `agent.tls.existingSecret` and other release names work.

Peers verify hostnames (docs/deploy.md): the chart's generated certificate names the
nodes (`agent.tls.dnsNames`, e.g. `*.ec2.internal`) unless `agent.tls.ipAddresses` lists
their IPs. With `address="auto"` the URL's host is the pod IP when the certificate's
recorded SANs (the Secret's `livepolicy.io/tls-sans` annotation) name it, the node name
when a DNS SAN matches it, else the pod IP.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livepolicy.agent.config import node_audience
from livepolicy.agent.tls_identity import CERT_ANNOTATION
from livepolicy.apply.agent_table import AgentTable, tls_context
from livepolicy.apply.engine import AgentEndpoint
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import DAEMONSETS, PODS, SECRETS

if TYPE_CHECKING:  # the CLI imports this module; the kubernetes client only when used
    from livepolicy.kube.client import KubeClient

DEFAULT_NAMESPACE = "livepolicy"
DEFAULT_SELECTOR = "app.kubernetes.io/name=livepolicy,app.kubernetes.io/component=agent"
PORT_NAME = "agent"
SANS_ANNOTATION = "livepolicy.io/tls-sans"  # templates/agent-secrets.yaml
ADDRESSES = ("auto", "ip", "node")
SA_PREFIX = "system:serviceaccount:"
# Lifetime of the per-node tokens apply asks for: longer than an apply's longest run
# (completion timeouts are minutes); the API server may shorten it.
TOKEN_SECONDS = 4 * 3600

Obj = dict[str, Any]


def _ready(pod: Obj) -> tuple[bool, str]:
    """Whether the pod serves (Running, condition Ready, not terminating), else why not."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return False, "is terminating"
    if status.get("phase") != "Running":
        return False, f"is {status.get('phase') or 'Pending'}"
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if cond is None or cond.get("status") != "True":
        return False, "is not Ready" + (f" ({cond['reason']})" if cond and cond.get("reason")
                                        else "")
    if not (status.get("podIP") or status.get("hostIP")):
        return False, "has no IP yet"
    return True, ""


def _agent_container(pod: Obj) -> tuple[Obj, int] | None:
    """The container serving the agent API and its port (the port named `agent`)."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == PORT_NAME and p.get("containerPort"):
                return c, int(p["containerPort"])
    return None


def _argv(container: Obj) -> list[str]:
    return [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]


def _flags(container: Obj, flag: str) -> list[str]:
    """Every value of `--flag VALUE` or `--flag=VALUE` in the container's command line."""
    argv = _argv(container)
    out = []
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith(flag + "="):
            out.append(a.split("=", 1)[1])
    return out


def _flag(container: Obj, flag: str) -> str | None:
    """The first value of `--flag` in the container's command line."""
    found = _flags(container, flag)
    return found[0] if found else None


def _secret_key(pod: Obj, container: Obj, path: str) -> tuple[str, str] | None:
    """The (Secret name, key) a file path inside the container is mounted from."""
    vols = {str(v.get("name")): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        root = str(m.get("mountPath", "")).rstrip("/")
        if not root or not path.startswith(root + "/"):
            continue
        secret = (vols.get(str(m.get("name"))) or {}).get("secret")
        if not secret or not secret.get("secretName"):
            return None
        rel = path[len(root) + 1:]
        for item in secret.get("items") or []:
            if item.get("path") == rel:
                return str(secret["secretName"]), str(item.get("key"))
        return str(secret["secretName"]), rel
    return None


def _own_certificate(pod: Obj) -> str | None:
    """The certificate a `--tls-self-signed` agent published on its pod ("" while it has
    not yet), or None for an agent of a shared CA or plain HTTP."""
    if "--tls-self-signed" not in _argv((_agent_container(pod) or ({}, 0))[0]):
        return None
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(CERT_ANNOTATION) or "")


def _dns_match(pattern: str, name: str) -> bool:
    """RFC 6125 matching as TLS does it: a leading `*` stands for exactly one label."""
    pattern, name = pattern.lower(), name.lower()
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def _sans(secret: Obj | None) -> tuple[list[str], list[str]] | None:
    """(DNS names, IPs) of the chart's generated certificate, from its annotation."""
    text = ((secret or {}).get("metadata") or {}).get("annotations", {}).get(SANS_ANNOTATION)
    if not text:
        return None
    parts = dict(p.split("=", 1) for p in str(text).split(";") if "=" in p)
    return ([d for d in parts.get("dns", "").split(",") if d],
            [i for i in parts.get("ip", "").split(",") if i])


class KubeAgents(AgentTable):
    """Endpoints of the chart's Ready agent pods, one per node (see the module docstring)."""

    where = "--agents kube"

    def __init__(self, client: KubeClient, *, namespace: str = DEFAULT_NAMESPACE,
                 selector: str | None = None, token_file: str | None = None,
                 ca_file: str | None = None, address: str = "auto") -> None:
        super().__init__()
        self.client = client
        self.namespace = namespace
        self.selector = selector or DEFAULT_SELECTOR
        self.address = address
        self._secrets: dict[str, Obj | None] = {}
        self.not_ready: dict[str, str] = {}  # node -> why its agent pod does not count
        try:
            pods = client.list(PODS, namespace=namespace, label_selector=self.selector).items
        except KubeError as exc:
            raise self._error(f"cannot list the agent pods: {exc}") from None
        self.daemonset = self._daemonset(pods)
        token = self._read_file(token_file, "--agent-token-file") if token_file else None
        ca = self._read_file(ca_file, "--agent-ca-file") if ca_file else None
        chosen: dict[str, Obj] = {}
        for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get(
                "creationTimestamp", ""))):
            node = str((pod.get("spec") or {}).get("nodeName") or "")
            if not node:
                continue
            ok, why = _ready(pod)
            if ok and _agent_container(pod) is None:
                ok, why = False, f"has no container port named {PORT_NAME!r}"
            if ok and _own_certificate(pod) == "":
                ok, why = False, (f"has not published its certificate yet (annotation "
                                  f"{CERT_ANNOTATION})")
            if ok:
                chosen[node] = pod  # the newest Ready pod (a rolling update may have two)
                self.not_ready.pop(node, None)
            elif node not in chosen:
                self.not_ready[node] = f"its pod {namespace}/{pod['metadata']['name']} {why}"
        for node, pod in sorted(chosen.items()):
            self.endpoints[node] = self._endpoint(node, pod, token, ca)

    # -- messages ------------------------------------------------------------------------
    def _error(self, message: str) -> DiagnosticError:
        return DiagnosticError([Diagnostic(self.where, message, None)])

    def _daemonset(self, pods: list[Obj]) -> str:
        """namespace/name of the agents' DaemonSet, for messages."""
        for pod in pods:
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
                if ref.get("kind") == "DaemonSet":
                    return f"{self.namespace}/{ref.get('name')}"
        try:
            found = self.client.list(DAEMONSETS, namespace=self.namespace,
                                     label_selector=self.selector).items
        except KubeError:
            found = []
        if found:
            return f"{self.namespace}/{found[0]['metadata']['name']}"
        return f"(none in namespace {self.namespace} with labels {self.selector})"

    def missing(self, node: str) -> str:
        why = self.not_ready.get(node, "it has no pod there (its nodeSelector, affinity "
                                 "or tolerations leave the node out?)")
        return (f"no Ready agent on node {node}: agent DaemonSet {self.daemonset}: {why} "
                f"(pods of namespace {self.namespace} with labels {self.selector}; "
                "see --agents-namespace, --agents-selector)")

    # -- endpoints -----------------------------------------------------------------------
    def _read_file(self, path: str, option: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DiagnosticError([Diagnostic(option, f"cannot read {path}: {exc}",
                                              None)]) from None

    def _secret(self, name: str) -> Obj | None:
        if name not in self._secrets:
            try:
                self._secrets[name] = self.client.get(SECRETS, name, self.namespace)
            except KubeError as exc:
                raise self._error(f"cannot read Secret {self.namespace}/{name} of the agents: "
                                  f"{exc} (or pass --agent-token-file and --agent-ca-file)"
                                  ) from None
        return self._secrets[name]

    def _secret_value(self, ref: tuple[str, str], what: str) -> str:
        name, key = ref
        data = (self._secret(name) or {}).get("data") or {}
        if key not in data:
            raise self._error(f"Secret {self.namespace}/{name} has no key {key!r} ({what})")
        try:
            return base64.b64decode(str(data[key]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise self._error(f"Secret {self.namespace}/{name} key {key!r} ({what}) is not "
                              f"base64 text: {exc}") from None

    def _mounted(self, pod: Obj, container: Obj, flag: str, what: str,
                 instead: str = "") -> tuple[str, str]:
        path = _flag(container, flag)
        ref = _secret_key(pod, container, path) if path else None
        if ref is None:
            raise self._error(f"the agent pod {self.namespace}/{pod['metadata']['name']} "
                              f"reads {what} ({flag} {path or '?'}) from no Secret volume"
                              + (f": give it with {instead}" if instead else ""))
        return ref

    def _endpoint(self, node: str, pod: Obj, token: str | None, ca: str | None
                  ) -> AgentEndpoint:
        container, port = _agent_container(pod) or ({}, 0)
        status = pod.get("status") or {}
        ip = str(status.get("podIP") or status.get("hostIP"))
        own = _own_certificate(pod)
        https = own is not None or _flag(container, "--tls-cert") is not None
        if token is None:
            token = self._minted(node, container)
        if token is None:
            token = self._secret_value(
                self._mounted(pod, container, "--token-file", "the bearer token",
                             "--agent-token-file"),
                "the bearer token").strip()
        host = ip
        ctx: ssl.SSLContext | None = None
        if own:
            # This node's agent alone: its own certificate, naming its node and addresses.
            host = node if self.address == "node" else ip
            try:
                ctx = tls_context("https:", cadata=own)
            except ssl.SSLError as exc:
                raise self._error(f"the certificate the agent on {node} published on its pod "
                                  f"({CERT_ANNOTATION}) is unusable: {exc}") from None
        elif https:
            tls_path = _flag(container, "--tls-ca")
            tls = _secret_key(pod, container, tls_path) if tls_path else None
            if ca is None:
                ca = self._secret_value(self._mounted(pod, container, "--tls-ca", "the CA",
                                                     "--agent-ca-file"),
                                        "the CA")
            host = self._host(node, ip, tls)
            ctx = tls_context("https:", cadata=ca)
            if ctx is not None and _flag(container, "--tls-client-ca") is not None:
                self._client_cert(ctx, pod, container)
        url = f"{'https' if https else 'http'}://{_bracket(host)}:{port}"
        return AgentEndpoint(node, url, token, ctx, certificate=own or None)

    def _minted(self, node: str, container: Obj) -> str | None:
        """A token for this node's agent alone: the ServiceAccount its `--auth-allow`
        names, with the node's audience (TokenRequest; agent/auth.py). None when the agent
        takes no such tokens."""
        accounts = [u.split(":")[2:] for u in _flags(container, "--auth-allow")
                    if u.startswith(SA_PREFIX) and u.count(":") == 3]
        if not accounts:
            return None
        if _flag(container, "--auth-audience") not in (None, node_audience(node)):
            raise self._error(f"the agent on {node} takes another audience than "
                              f"{node_audience(node)}: give --agent-token-file")
        ns, name = accounts[0]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [node_audience(node)],
                         "expirationSeconds": TOKEN_SECONDS}}
        try:
            answer = self.client.request(
                "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token", body=body)
        except KubeError as exc:
            raise self._error(
                f"cannot get a token for the agent on {node} (TokenRequest for "
                f"ServiceAccount {ns}/{name}): {exc} (apply needs `create` on "
                f"serviceaccounts/token of {ns}/{name}: docs/deploy.md)") from None
        token = ((answer or {}).get("status") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise self._error(f"the TokenRequest for {ns}/{name} returned no token")
        return token

    def _host(self, node: str, ip: str, tls: tuple[str, str] | None) -> str:
        if self.address == "ip":
            return ip
        if self.address == "node":
            return node
        sans = None
        if tls is not None:
            try:
                sans = _sans(self._secret(tls[0]))
            except DiagnosticError:
                sans = None  # only the CA is needed; an explicit --agent-ca-file may do
        if sans is None:
            return ip
        dns, ips = sans
        if ip in ips:
            return ip
        return node if any(_dns_match(d, node) for d in dns) else ip

    def _client_cert(self, ctx: ssl.SSLContext, pod: Obj, container: Obj) -> None:
        """Mutual TLS: the agents' own certificate (server and client use) from its Secret.
        `load_cert_chain` reads files only: the PEMs live in a private temporary directory
        for the duration of the call."""
        cert = self._secret_value(self._mounted(pod, container, "--tls-cert", "the "
                                                "certificate"), "the client certificate")
        key = self._secret_value(self._mounted(pod, container, "--tls-key", "the key"),
                                 "the client key")
        with tempfile.TemporaryDirectory(prefix="livepolicy-agent-tls-") as d:
            files = {}
            for name, text in (("tls.crt", cert), ("tls.key", key)):
                path = os.path.join(d, name)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                files[name] = path
            try:
                ctx.load_cert_chain(files["tls.crt"], files["tls.key"])
            except ssl.SSLError as exc:
                raise self._error(f"the agents' client certificate is unusable: {exc}"
                                  ) from None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host

