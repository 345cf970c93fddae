"""A TLS peer on another stack (Python's ssl, i.e. OpenSSL) for the interop TLS matrix.

server CERT KEY ALPN[,ALPN...] [CLIENT_ROOTS]
    Listens on 127.0.0.1 (port printed as "port N"), and for each connection prints one JSON
    line: {"handshake": "failed", "error": ...} or {"handshake": "ok", "request": true|false}.
    A request that arrives is answered "HTTP/1.1 200" with body "reached". The certificate is
    served as given, even expired: OpenSSL does not judge its own certificate, which is what
    the matrix needs. With CLIENT_ROOTS a client certificate is required.

client PORT ROOTS [CERT KEY]
    Connects to 127.0.0.1:PORT, verifies the server's chain against ROOTS (not its name: mesh
    certificates carry SPIFFE IDs, not host names), presents CERT if given, sends one GET over
    HTTP/1.1 and prints {"status": N, "body": ...} or {"error": ...}.
"""

import json
import socket
import ssl
import sys


def serve(cert: str, key: str, alpn: str, client_roots: str | None) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(alpn.split(","))
    if client_roots:
        ctx.load_verify_locations(client_roots)
        ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"port {listener.getsockname()[1]}", flush=True)
    while True:
        raw, _ = listener.accept()
        raw.settimeout(10)
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(json.dumps({"handshake": "failed", "error": str(e)}), flush=True)
            raw.close()
            continue
        request = b""
        try:
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
        except (ssl.SSLError, OSError):
            pass
        reached = b"\r\n\r\n" in request
        if reached:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nreached"
            )
        print(json.dumps({"handshake": "ok", "request": reached}), flush=True)
        conn.close()


def call(port: int, roots: str, cert: str | None, key: str | None) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(roots)
    ctx.set_alpn_protocols(["http/1.1"])
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nhost: mesh\r\nconnection: close\r\n\r\n")
                response = b""
                while True:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    response += chunk
        head, _, body = response.partition(b"\r\n\r\n")
        if not head:
            print(json.dumps({"error": "connection closed without a response"}))
            return
        status = int(head.split(b" ")[1])
        print(json.dumps({"status": status, "body": body.decode(errors="replace")}))
    except (ssl.SSLError, OSError) as e:
        print(json.dumps({"error": str(e)}))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else None)
    else:
        args = sys.argv[2:]
        call(int(args[0]), args[1], *(args[2:4] if len(args) >= 4 else (None, None)))
