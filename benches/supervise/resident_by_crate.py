#!/usr/bin/env python3
"""Which crates the resident pages of a running binary belong to.

Usage (root: /proc/<pid>/pagemap): resident_by_crate.py <pid> <binary path> [top N]

Reads which pages of the binary's mappings are resident (pagemap bit 63),
then spreads each resident text page over the symbols (`nm -C -S`) that
overlap it and sums per crate (the first path segment of the demangled
name). A page mapped only because the kernel's fault-around brought in its
64 KiB block counts like any other: this shows what the block layout costs,
not what ran.
"""
import sys, struct, subprocess, re, collections, bisect
pid = int(sys.argv[1]); exe = sys.argv[2]
maps = []
for line in open(f"/proc/{pid}/maps"):
    parts = line.split()
    if len(parts) >= 6 and parts[5] == exe:
        lo, hi = (int(x, 16) for x in parts[0].split('-'))
        off = int(parts[2], 16)
        maps.append((lo, hi, parts[1], off))
base = min(m[0] - m[3] for m in maps)  # load bias (file offset 0)
# resident pages
pm = open(f"/proc/{pid}/pagemap", "rb")
res = []
for lo, hi, perm, off in maps:
    pm.seek(lo // 4096 * 8)
    data = pm.read((hi - lo) // 4096 * 8)
    for i in range((hi - lo) // 4096):
        e = struct.unpack_from("<Q", data, i * 8)[0]
        if e >> 63 & 1:
            res.append(lo + i * 4096 - base)  # vaddr in file terms (ELF vaddr since PIE base 0)
# symbols
out = subprocess.run(["nm", "-C", "--defined-only", "-n", "-S", exe], capture_output=True, text=True).stdout
syms = []
for l in out.splitlines():
    p = l.split(' ', 3)
    if len(p) == 4 and p[2] in 'tTwW':
        syms.append((int(p[0], 16), int(p[1], 16), p[3]))
addrs = [s[0] for s in syms]
def crate(name):
    n = re.sub(r'^<', '', name)
    n = re.sub(r'^(impl |dyn )', '', n)
    m = re.match(r'([A-Za-z_][A-Za-z0-9_]*)::', n)
    return m.group(1) if m else name[:30]
per = collections.Counter()
text_pages = 0
for pg in res:
    i = bisect.bisect_right(addrs, pg + 4095) 
    # attribute page bytes to symbols overlapping it
    j = bisect.bisect_right(addrs, pg) - 1
    found = False
    k = max(j, 0)
    while k < len(syms) and syms[k][0] < pg + 4096:
        a, s, n = syms[k]
        ov = min(a + s, pg + 4096) - max(a, pg)
        if ov > 0:
            per[crate(n)] += ov; found = True
        k += 1
    if found: text_pages += 1
total = len(res) * 4
print(f"resident pages of exe: {total} KiB; text pages w/ symbols: {text_pages*4} KiB")
for c, b in per.most_common(int(sys.argv[3]) if len(sys.argv) > 3 else 30):
    print(f"{b/1024:8.1f} KiB {c}")
