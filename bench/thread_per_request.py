"""A thread-per-request server (http.server.ThreadingHTTPServer) and a client in one process:
the case issue 13 measured for `convert --merge-threads` (each request's thread is a root of
its own in folded stacks).  Usage:

    fasttrace run -o tpr.ftrace bench/thread_per_request.py [REQUESTS]
    fasttrace convert tpr.ftrace -f collapsed -o per-thread.folded
    fasttrace convert tpr.ftrace -f collapsed --merge-threads -o merged.folded
"""

import http.client
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "items": list(range(50))}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main(requests):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for i in range(requests):
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
        conn.request("GET", f"/item/{i}")
        json.loads(conn.getresponse().read())
        conn.close()
    server.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
