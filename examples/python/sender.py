#!/usr/bin/env python3
"""A sender that asks suppressd before every notice, and records opt-outs (docs/clients.md, Python).

    sender.py --server HOST:PORT --api-key KEY check --email ada@example.com --topic recall
    sender.py --server HOST:PORT --api-key KEY opt-out --email ada@example.com --idempotency-key K

`check` is fail-closed: only an OK answer with suppressed=false sends (exit 0, {"decision": "send"});
a suppressed answer, any error and a timeout hold the notice (exit 3, {"decision": "hold"}).
`opt-out` retries transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED)
with backoff, always with the same idempotency key, so a retry of an opt-out that did land returns
the first receipt instead of recording a second one. Each prints one JSON line.

Needs grpcio and grpcio-tools (`pip install grpcio grpcio-tools`). The code is generated from the
service's own proto/ at start (into a temporary directory), unless `suppress.v1` is importable
already (e.g. generated into your project with `python -m grpc_tools.protoc`).
"""

import argparse
import json
import os
import sys
import tempfile
import time
import uuid

import grpc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}


def generated():
    """The generated modules: importable already, or generated from proto/ now."""
    try:
        from suppress.v1 import suppression_pb2, suppression_pb2_grpc
    except ImportError:
        import importlib.resources

        from grpc_tools import protoc

        out = tempfile.mkdtemp(prefix="suppressd-py-")
        well_known = str(importlib.resources.files("grpc_tools") / "_proto")
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                os.path.join(PROTO_ROOT, "suppress", "v1", "suppression.proto"),
            ]
        )
        if status != 0:
            sys.exit(f"sender.py: generating code from {PROTO_ROOT} failed")
        sys.path.insert(0, out)
        from suppress.v1 import suppression_pb2, suppression_pb2_grpc
    return suppression_pb2, suppression_pb2_grpc


pb, rpc = generated()


def check(stub, metadata, args):
    """Fail-closed: only OK + suppressed=false sends."""
    request = pb.CheckSuppressedRequest(
        recipient=pb.Recipient(email=args.email),
        scope=pb.Scope(tenant=args.tenant, channel=pb.CHANNEL_EMAIL, topic=args.topic),
    )
    try:
        answer = stub.CheckSuppressed(request, metadata=metadata, timeout=args.timeout)
    except grpc.RpcError as e:
        return 3, {"decision": "hold", "why": e.code().name}
    if answer.suppressed:
        why = pb.Reason.Name(answer.matched.reason) if answer.HasField("matched") else "suppressed"
        return 3, {"decision": "hold", "why": why}
    # ... send the notice here ...
    return 0, {"decision": "send"}


def opt_out(stub, metadata, args):
    """Records the opt-out; retries transient failures with the same idempotency key."""
    request = pb.OptOutRequest(
        recipient=pb.Recipient(email=args.email),
        scope=pb.Scope(tenant=args.tenant, channel=pb.CHANNEL_EMAIL),
        reason=pb.REASON_USER_REQUEST,
        source=pb.SOURCE_API,
        idempotency_key=args.idempotency_key or str(uuid.uuid4()),
    )
    backoff = 0.2
    for attempt in range(1, args.attempts + 1):
        try:
            answer = stub.OptOut(request, metadata=metadata, timeout=args.timeout)
            return 0, {
                "receipt_id": answer.receipt.receipt_id,
                "state": pb.ReceiptState.Name(answer.receipt.state),
                "attempts": attempt,
            }
        except grpc.RpcError as e:
            if e.code() not in TRANSIENT or attempt == args.attempts:
                return 1, {"error": e.code().name, "detail": e.details(), "attempts": attempt}
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("SUPPRESSD_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--api-key", default=os.environ.get("SUPPRESSD_API_KEY"))
    parser.add_argument("--tenant", default="")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per call")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check, then send only if allowed")
    c.add_argument("--email", required=True)
    c.add_argument("--topic", required=True)
    o = sub.add_parser("opt-out", help="record an opt-out of email, with retries")
    o.add_argument("--email", required=True)
    o.add_argument("--idempotency-key", help="reuse it for every retry of this opt-out")
    o.add_argument("--attempts", type=int, default=5)
    args = parser.parse_args()
    if not args.api_key:
        parser.error("--api-key or SUPPRESSD_API_KEY is required")

    metadata = [("authorization", f"Bearer {args.api_key}")]
    # Plaintext for a local server; use grpc.secure_channel with grpc.ssl_channel_credentials() for TLS.
    with grpc.insecure_channel(args.server) as channel:
        stub = rpc.SuppressionStub(channel)
        code, result = (check if args.command == "check" else opt_out)(stub, metadata, args)
    print(json.dumps(result))
    sys.exit(code)


if __name__ == "__main__":
    main()
