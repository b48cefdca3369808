#!/usr/bin/env python3
"""Writes the shipped `day-with-peaks` simulation trace (src/Pocket.Controller/Simulation/day-with-peaks.json).

Deterministic: the same seed writes the same file, byte for byte. Usage:
    python3 bench/day-with-peaks.py [--seed 11] [--out FILE]   # default: the shipped file, seed 11

A 12-hour working day: two ETL jobs run all day (3 + 2 Gb/s, 40 + 25 GB); other jobs of 2-10 Gb/s and 5-60 GB,
each ramping up in 10-30 s, holding, and ramping down as fast, 2-15 minutes in all, arrive as a Poisson process:
one per 5 minutes on average, one per 40 s in a morning peak (hours 2-4) and one per 25 s in an afternoon peak
(hours 7-9). 10 % per-second noise on those jobs, 5 % on the ETL jobs; DRAM nodes of 8 Gb/s and 60 GB.
"""
import argparse
import json
import random

DAY = 12 * 3600


def rate(second):
    """Arrivals per second at this time of day."""
    hour = second / 3600
    if 2 <= hour < 4:
        return 1 / 40
    if 7 <= hour < 9:
        return 1 / 25
    return 1 / 300


def job(name, start, noise, ramp, length, gbps, capacity):
    return {
        "name": name,
        "start": start,
        "tier": "dram",
        "noise": noise,
        "profile": [
            {"at": 0, "throughput": "0", "capacity": "0"},
            {"at": ramp, "throughput": f"{gbps}Gbps", "capacity": capacity},
            {"at": length - ramp, "throughput": f"{gbps}Gbps", "capacity": capacity},
            {"at": length, "throughput": "0"},
        ],
    }


def generate(seed):
    rng = random.Random(seed)
    jobs = [
        job("etl-0", 0, 0.05, 60, DAY, 3, "40GB"),
        job("etl-1", 0, 0.05, 60, DAY, 2, "25GB"),
    ]
    # Thinning (Lewis-Shedler): candidates at the peak rate, each kept with probability rate(t) / peak.
    peak = 1 / 25
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= DAY - 900:
            break
        if rng.random() >= rate(t) / peak:
            continue
        length = rng.randint(120, 900)
        ramp = rng.randint(10, 30)
        gbps = round(rng.uniform(2, 10), 1)
        capacity = f"{rng.randint(5, 60)}GB"
        jobs.append(job(f"job-{len(jobs) - 2:04d}", round(t, 1), 0.1, ramp, length, gbps, capacity))

    others = len(jobs) - 2
    return {
        "name": "day-with-peaks",
        "description": (
            f"A long working day (12 h) with peaks: two ETL jobs run all day (5 Gb/s, 65 GB together); {others} jobs of "
            "2-10 Gb/s and 5-60 GB for 2-15 min arrive one per 5 min on average, one per 40 s in a morning peak "
            "(hours 2-4) and one per 25 s in an afternoon peak (hours 7-9); 5-10 % per-second noise; DRAM nodes of "
            f"8 Gb/s and 60 GB. Written by bench/day-with-peaks.py --seed {seed}."
        ),
        "seed": seed,
        "startDelay": 5,
        "drainTime": 5,
        "initialNodes": {"dram": 2},
        "nodeClasses": {"dram": {"bandwidth": "8Gbps", "capacity": "60GB", "cpuAtFullBandwidth": 0.5}},
        "policy": {
            "lower": 0.8, "upper": 0.95, "minNodes": 2, "maxNodes": 64, "cooldown": 5, "lead": 5,
            "resources": ["cpu", "network", "capacity"],
        },
        "jobs": jobs,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", default="src/Pocket.Controller/Simulation/day-with-peaks.json")
    args = parser.parse_args()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(generate(args.seed), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
