#!/usr/bin/env python3
"""The JSON-RPC of a Bitcoin Core node, as far as a pool needs it, serving
mainnet-shaped templates built from a real regtest template (the fixture):
3,000 transactions (12 merkle branches), the segwit commitment, mainnet bits
(so no share is a block). The previous block changes every PREV seconds, which
makes the pool send clean jobs; in between it rebroadcasts non-clean ones.

usage: node.py FIXTURE PORT PREV   (prints the port it listens on)
"""
import hashlib
import http.server
import json
import sys
import time

fixture = json.load(open(sys.argv[1]))
fixture = fixture.get("result", fixture)
PREV = float(sys.argv[3])
START = time.time()
TRANSACTIONS = 3000


def digest(*parts):
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def template():
    now = time.time()
    epoch = int((now - START) // PREV)
    base = fixture["transactions"]
    transactions = [
        dict(base[i % len(base)], txid=digest("txid", epoch, i), hash=digest("wtxid", epoch, i), depends=[])
        for i in range(TRANSACTIONS)
    ]
    return dict(
        fixture,
        transactions=transactions,
        previousblockhash=digest("prev", epoch),
        height=870000 + epoch,
        bits="17027726",
        target="0000000000000000000277260000000000000000000000000000000000000000",
        curtime=int(now),
        mintime=int(START),
        longpollid=digest("prev", epoch),
    )


ANSWERS = {
    "getblocktemplate": lambda params: template(),
    "validateaddress": lambda params: {"isvalid": True, "address": params[0],
                                       "scriptPubKey": "0014751e76e8199196d454941c45d1b3a323f1433bd6"},
    "getdifficulty": lambda params: 1.0e14,
    "getmininginfo": lambda params: {"blocks": 869999, "difficulty": 1.0e14, "networkhashps": 7.0e20},
    "getblockchaininfo": lambda params: {"chain": "main", "blocks": 869999, "headers": 869999},
    "getnetworkinfo": lambda params: {"version": 280000, "connections": 8},
    "getpeerinfo": lambda params: [{"addr": "127.0.0.1:8333"}],
}


def call(request):
    method, params = request.get("method"), request.get("params") or []
    reply = {"id": request.get("id"), "result": None, "error": None}
    if method in ANSWERS:
        reply["result"] = ANSWERS[method](params)
    elif method == "submitblock":
        # What Bitcoin Core says to a submitblock without a block.
        reply["error"] = {"code": -1, "message": "submitblock \"hexdata\" ( \"dummy\" )"}
    else:
        reply["error"] = {"code": -32601, "message": "Method not found"}
    return reply


class Rpc(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = json.dumps([call(r) for r in body] if isinstance(body, list) else call(body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Rpc)
print(server.server_address[1], flush=True)
server.serve_forever()
