"""What one SASL login costs the broker's CPU: SCRAM-SHA-256 and SCRAM-SHA-512 (the server side
of the exchange, node/security/scram.py: both rounds, client work excluded) beside an uncached
PLAIN login (one scrypt derivation with the default work factors, node/security/credentials.py).

    .venv/bin/python bench/scram_login.py --logins 2000

One process, no cluster, no network. The client's side of SCRAM (PBKDF2 with the stored
iteration count, ~4096 HMACs) runs between the timed calls and is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kafka.net.sasl.scram import ScramClient

from strom.client import sasl, scram
from strom.node.controller import security
from strom.node.metadata.image import MetadataImage, apply_records
from strom.node.security.scram import ScramLogins


def scram_server_us(mechanism: str, logins: int) -> list[float]:
    password = "bench-password"
    scrypt = sasl.new_credential(password)
    creds = [scram.new_credential(m, password) for m in scram.MECHANISMS.values()]
    image, _ = apply_records(
        MetadataImage(), security.upsert_user(MetadataImage(), "bench", scrypt, creds), 1, 1
    )
    logins_ = ScramLogins(lambda name, m: image.scram.get((name, m)))
    samples = []
    for _ in range(logins):
        client = ScramClient("bench", password, mechanism)
        first = client.first_message()
        start = time.perf_counter()
        exchange = logins_.start(mechanism)
        server_first = exchange.first(first)
        spent = time.perf_counter() - start
        client.process_server_first_message(server_first)
        final = client.final_message()
        start = time.perf_counter()
        exchange.final(final)
        spent += time.perf_counter() - start
        assert exchange.username == "bench"
        samples.append(spent * 1e6)
    return samples


def scrypt_us(logins: int) -> list[float]:
    credential = sasl.new_credential("bench-password")
    samples = []
    for _ in range(logins):
        start = time.perf_counter()
        sasl.derive("bench-password", credential.salt, credential.n, credential.r, credential.p)
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=2000)
    args = parser.parse_args()
    rows = [
        ("SCRAM-SHA-256 (server side, 2 rounds)", scram_server_us("SCRAM-SHA-256", args.logins)),
        ("SCRAM-SHA-512 (server side, 2 rounds)", scram_server_us("SCRAM-SHA-512", args.logins)),
        ("PLAIN, uncached (scrypt n=16384 r=8 p=1)", scrypt_us(max(args.logins // 100, 10))),
    ]
    print("| login | median µs | p99 µs | samples |")
    print("|---|---:|---:|---:|")
    for name, samples in rows:
        samples.sort()
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        print(f"| {name} | {statistics.median(samples):,.0f} | {p99:,.0f} | {len(samples)} |")


if __name__ == "__main__":
    main()
