"""grpcio (gRPC C-core) as a peer xDS client for the interop tests.

Reads the gRPC bootstrap from GRPC_XDS_BOOTSTRAP (written by the Rust test), dials
xds:///<target>, and makes one helloworld.Greeter/SayHello call per case given on stdin
as JSON lines {"name": "...", "metadata": [["k", "v"], ...]}. Messages are encoded by hand
(one string field), so no generated stubs are needed. Prints one JSON line per case:
{"name": ..., "reply": "<the greeting>"} or {"name": ..., "error": "<status>"}.
"""

import json
import sys

import grpc

METHOD = "/helloworld.Greeter/SayHello"


def encode(name: str) -> bytes:
    data = name.encode()
    return b"\x0a" + bytes([len(data)]) + data


def decode(reply: bytes) -> str:
    # HelloReply { string message = 1; } with a one-byte length.
    return reply[2 : 2 + reply[1]].decode() if reply[:1] == b"\x0a" else ""


def main() -> None:
    target = sys.argv[1]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        for line in sys.stdin:
            case = json.loads(line)
            try:
                reply = call(
                    encode(case["name"]),
                    metadata=[tuple(kv) for kv in case.get("metadata", [])],
                    timeout=20,
                    wait_for_ready=True,
                )
                out = {"name": case["name"], "reply": decode(reply)}
            except grpc.RpcError as e:
                out = {"name": case["name"], "error": f"{e.code()}: {e.details()}"}
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
