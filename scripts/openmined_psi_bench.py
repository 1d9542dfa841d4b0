"""Times openmined-psi (PyPI `openmined-psi`, ECDH over P-256) on the same
workload as `jointscore bench psi`: N items per side, half shared, the
requester (client) learning the intersection. Exact (RAW) setup, no Bloom or
GCS filter, so both sides compute the same thing.

    python3 -m venv /tmp/ompsi && /tmp/ompsi/bin/pip install openmined-psi==2.0.6
    /tmp/ompsi/bin/python scripts/openmined_psi_bench.py 65536
"""

import json
import sys
import time

import private_set_intersection.python as psi

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 16
client_items = [f"invoice:{i:012}" for i in range(n)]
server_items = [f"invoice:{i:012}" for i in range(n // 2, n // 2 + n)]

start = time.perf_counter()
client = psi.client.CreateWithNewKey(True)
server = psi.server.CreateWithNewKey(True)
setup = server.CreateSetupMessage(0.0, len(client_items), server_items, psi.DataStructure.RAW)
request = client.CreateRequest(client_items)
response = server.ProcessRequest(request)
intersection = client.GetIntersection(setup, response)
seconds = time.perf_counter() - start

correct = sorted(intersection) == list(range(n // 2, n))
print(json.dumps({"size": n, "seconds": seconds, "items_per_s": n / seconds, "correct": correct,
                  "bytes": setup.ByteSize() + request.ByteSize() + response.ByteSize()}))
