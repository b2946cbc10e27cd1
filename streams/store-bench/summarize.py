#!/usr/bin/env python3
"""Median (and min-max) per engine and phase over results/bench-r*.log."""
import re, glob, statistics, collections
d = collections.defaultdict(lambda: collections.defaultdict(list))
for f in sorted(glob.glob('bench-r*.log')):
    eng = None
    for line in open(f):
        m = re.match(r'== (\S+)', line)
        if m: eng = m.group(1); continue
        m = re.match(r'(\d) (.*?)\s+([\d.]+)(/s| ms)', line)
        if m and eng:
            ph = m.group(1) + ' ' + m.group(2).strip()
            d[eng][ph].append(float(m.group(3)))
for eng, phs in d.items():
    print(eng)
    for ph, v in phs.items():
        print(f"  {ph:40s} median {statistics.median(v):>10.0f}  range {min(v):.0f}-{max(v):.0f}")
