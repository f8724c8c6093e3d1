"""python -m stack.chaos (run with .venv/bin/python): the fault run stack/chaos/ describes."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

import aiohttp
import psycopg

from stack import chaos
from stack.chaos import ha, restarts
from stack.chaos.driving import log, make_up, restarted_with_worker_env
from stack.chaos.faults import PROFILES, FaultResult, inject, print_table
from stack.chaos.invariants import check_invariants, wait_terminal
from stack.chaos.load import Client, Load
from testkit import rows, stack


async def run(args: argparse.Namespace) -> int:
    env = stack.env()
    faults = args.faults.split(",") if args.faults else PROFILES[args.profile]
    topology = env.get("STACK_TOPOLOGY", "small")
    if args.profile in ("ha", "restarts") and topology != "ha":
        log(f"the {args.profile} profile needs STACK_TOPOLOGY=ha; this stack runs {topology}")
        return 2
    log("restarting the stack's workers and watchdog with the load's fraud setting")
    stack.run_stack("stop", *restarted_with_worker_env(topology))
    rc, _, output = await asyncio.to_thread(make_up)
    if rc != 0:
        log(f"the stack is not up:\n{output[-2000:]}")
        return 2
    made = await asyncio.to_thread(rows.create_merchant_sync, env["DATABASE_URL"],
                                   "Chaos " + secrets.token_hex(3))
    merchant, api_key = made.id, made.api_key
    run_id = secrets.token_hex(3)
    results: list[FaultResult] = []
    ha_results: list[ha.HaResult] = []
    async with aiohttp.ClientSession() as http:
        client = Client(env["API_URL"], api_key, http)
        load = Load(client, args.rate, patience=args.patience)
        loader = asyncio.create_task(load.run(run_id))
        log(f"load: {args.rate}/s for merchant {merchant}; warming up {args.warmup:.0f}s")
        await asyncio.sleep(args.warmup)
        if args.profile == "ha":
            ha_results = await ha.kill_each(faults, load, env, args.dwell)
            # Then one `make up` for all of them, measured like any fault's.
            results.append(await inject("make-up", load, 0.0))
        elif args.profile == "restarts":
            done = await restarts.cycle(faults, args.rounds, args.interval)
            log(f"{len(done)} rounds: {', '.join(done)}")
            results.append(await inject("make-up", load, 0.0))
        else:
            for fault in faults:
                results.append(await inject(fault, load, args.settle))
        for r in results:
            log(f"{r.fault}: make up rc={r.make_up_rc} in {r.make_up_s:.1f}s, "
                f"2xx again after {r.to_2xx_s}s, new payment {r.probe_status} "
                f"in {r.to_resolved_s}s")
        load.stop()
        await loader
        log(f"{len(load.orders)} orders placed; waiting for the last requests")
        await asyncio.gather(*load.tasks)
        async with await psycopg.AsyncConnection.connect(env["DATABASE_ADMIN_URL"],
                                                         autocommit=True) as db:
            left = await wait_terminal(db, merchant, args.drain)
        log("every payment terminal" if not left else f"{left} still not terminal")
        broken = await check_invariants(env, client, merchant, load.orders)
    missed: list[str] = []
    if ha_results:
        await ha.measure(ha_results, load, env["DATABASE_ADMIN_URL"], merchant)
        ha.print_ha_table(ha_results)
        missed = ha.ha_ok(ha_results)
        for sentence in missed:
            print(f"  MISSED: {sentence}")
        rejoined = await asyncio.to_thread(stack.up)
        absent = sorted(set(stack.components()) - rejoined)
        print("after make up: every process " + ("up" if not absent else
                                                  f"but {', '.join(absent)} up"))
        missed += [f"{name} not up after make up" for name in absent]
    failed = [o for o in load.orders if o.failed_for_good]
    print_table(results)
    print(f"orders {len(load.orders)}, accepted {sum(1 for o in load.orders if o.payment_id)}, "
          f"refunds {sum(1 for o in load.orders if o.refund_id)}, "
          f"failed for good {len(failed)}")
    for order in failed[:20]:
        print(f"  failed for good: {order.key}: {order.failed_for_good}")
    for sentence in broken:
        print(f"  BROKEN: {sentence}")
    print("invariants: " + ("all hold" if not broken else f"{len(broken)} broken"))
    ok = not broken and not failed and not missed and all(
        r.make_up_rc == 0 and r.probe_status == "succeeded" for r in results)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(chaos.__doc__ or "").split("\n\n")[0],
                                     epilog="Profiles: " + "; ".join(
                                         f"{k}: {', '.join(v)}" for k, v in PROFILES.items()))
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full",
                        help="which components to kill, in order (default full)")
    parser.add_argument("--faults", help="comma-separated components instead of a profile")
    parser.add_argument("--rate", type=float, default=8.0,
                        help="payments per second through the API (default 8)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of load before the first fault (default 5)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between a kill and make up (default 3)")
    parser.add_argument("--dwell", type=float, default=40.0,
                        help="ha profile: seconds from one kill to the next (default 40)")
    parser.add_argument("--rounds", type=int, default=12,
                        help="restarts profile: workers taken down, each in turn, each way "
                             "in turn: restart, kill -9, freeze for 20 s (default 12)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="restarts profile: seconds between two rounds (default 5)")
    parser.add_argument("--patience", type=float, default=180.0,
                        help="how long a client keeps retrying one request (default 180)")
    parser.add_argument("--drain", type=float, default=300.0,
                        help="seconds to wait for every payment to be terminal (default 300)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
