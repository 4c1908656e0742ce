"""The image transfer between agents: the source streams it to the destination's PUT /image.

The source opens the connection itself (HTTPS when the peer URL is https, trusting the
destination's own certificate when apply hands it over, agent/tls_identity.py, else the
configured CA; with the configured client certificate) and authenticates with the upload token apply
gave it for this migration alone (agent/auth.py: the destination got its SHA-256 at
prepare; no operator credential of the destination ever reaches the source); the
destination stores the sealed bytes and checks their hash, and acknowledges a re-sent
copy of the image it already restored from (a source retrying after a crash).
"""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

from livepolicy.agent.errors import ApiError, bad_request, conflict
from livepolicy.agent.ids import check_agent_url, check_mid
from livepolicy.agent.images import COPY_CHUNK, Readable
from livepolicy.agent.service_core import (
    MAX_TOKEN,
    Json,
    ServiceCore,
    bool_field,
    drain_sha256,
    ms,
)

MAX_CERT = 16_384  # a PEM certificate; a chain would be longer but is not what is pinned


class TransferSteps(ServiceCore):
    """`transfer` and `receive_image` of `AgentService`."""

    def transfer(self, mid: str, body: Json) -> Json:
        check_mid(mid)
        token = body.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            raise bad_request("token (the upload token granted at the destination) is required")
        if any(c.isspace() or not c.isprintable() or ord(c) > 126 for c in token):
            raise bad_request("token must be printable ASCII without spaces")
        force = bool_field(body, "force", False)
        destination = body.get("destination")
        pinned = body.get("destination_certificate")
        # PEM is ASCII; ssl refuses anything else with a TypeError (it was a 500).
        if pinned is not None and (not isinstance(pinned, str) or len(pinned) > MAX_CERT
                                   or not pinned.isascii()
                                   or "-----BEGIN CERTIFICATE-----" not in pinned):
            raise bad_request("destination_certificate must be the destination's PEM "
                              "certificate")

        def work(slowdown: float) -> Json:
            rec = self._record(mid, "source")
            self._refuse_rolled_back(rec)
            dest = check_agent_url(destination or rec.peer, "destination")
            if rec.phase in ("prepared", "precopy"):
                raise conflict("not_checkpointed", "take the final checkpoint before transfer")
            done = rec.phase == "transferred" and rec.transferred_to == dest and not force
            if done or rec.phase in ("committing", "committed"):
                return {"bytes": rec.image_bytes, "sha256": rec.image_sha256, "duration_ms": 0}
            if self.images.size(mid) == 0:
                raise conflict("no_image", f"the image of {mid} is gone (cleaned up?)")
            seconds = self.runtime.link_delay(rec.final_bytes, slowdown)
            answer = self._send_image(mid, dest, token, pinned)
            if answer.get("sha256") != rec.image_sha256:
                raise ApiError(502, "transfer_corrupt", "destination stored different bytes")
            rec.transferred_to = dest
            rec.set_phase("transferred")
            self.migrations.save(rec)
            return {
                "bytes": rec.image_bytes,
                "sha256": rec.image_sha256,
                "duration_ms": ms(seconds),
            }

        return self._step("transfer", mid, work)

    def _peer_connection(self, url: str, pinned: str | None = None
                         ) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        timeout = self.config.peer_timeout
        host = parts.hostname or ""
        if parts.scheme == "https":
            try:
                ctx = (ssl.create_default_context(cadata=pinned) if pinned else
                       ssl.create_default_context(cafile=str(self.config.tls_ca_file)
                                                  if self.config.tls_ca_file else None))
            except ssl.SSLError as exc:
                raise bad_request(f"destination_certificate is unusable: {exc}") from None
            if self.config.tls_cert_file and self.config.tls_key_file:
                ctx.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        return conn, parts.path.rstrip("/")

    def _send_image(self, mid: str, dest: str, token: str, pinned: str | None) -> Json:
        """Stream the encrypted image to the destination agent's PUT /image."""
        size = self.images.size(mid)
        conn, prefix = self._peer_connection(dest, pinned)
        rec = self._record(mid)
        try:
            with self.images.open(mid) as fh:
                conn.connect()  # a refused TLS handshake says why, before anything is sent
                try:
                    conn.putrequest("PUT", f"{prefix}/v1/migrations/{mid}/image")
                    conn.putheader("Authorization", f"Bearer {token}")
                    conn.putheader("Content-Type", "application/octet-stream")
                    conn.putheader("Content-Length", str(size))
                    conn.putheader("X-Image-Sha256", rec.image_sha256)
                    conn.endheaders()
                    for block in iter(lambda: fh.read(COPY_CHUNK), b""):
                        conn.send(block)
                except OSError:
                    pass  # the peer may have refused early: its answer says why
                resp = conn.getresponse()
                raw = resp.read(1 << 16)
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(502, "peer_unreachable", f"destination {dest}: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if resp.status != 200 or not isinstance(answer, dict):
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            code = err.get("code", "?") if isinstance(err, dict) else "?"
            message = err.get("message", "") if isinstance(err, dict) else ""
            raise ApiError(
                502, "peer_error", f"destination answered {resp.status} ({code}): {message}"
            )
        return answer

    def receive_image(
        self, mid: str, body: Readable, length: int, expected_sha256: str | None
    ) -> Json:
        check_mid(mid)

        def work(_: float) -> Json:
            rec = self._record(mid, "destination")
            self._refuse_rolled_back(rec)
            if rec.phase not in ("prepared", "received"):
                # A re-sent copy of the image we restored from (source retried after a
                # crash) is acknowledged; anything else is refused.
                if expected_sha256 == rec.image_sha256 and drain_sha256(body, length) == (
                    rec.image_sha256
                ):
                    return {"bytes": rec.image_bytes, "sha256": rec.image_sha256}
                raise conflict("already_restored", f"migration {mid} is past receiving")
            info = self.images.receive(mid, body, length, expected_sha256)
            rec.image_bytes, rec.image_sha256 = info.bytes, info.sha256
            rec.set_phase("received")
            self.migrations.save(rec)
            return {"bytes": info.bytes, "sha256": info.sha256}

        return self._step("receive", mid, work)
