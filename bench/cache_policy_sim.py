#!/usr/bin/env python3
"""A model of the verified-token cache's policy (src/auth/tokens/cache.rs) in a few lines, to
compare hit ratios of CLOCK alone and CLOCK with TinyLFU admission on access patterns no load
generator here produces cheaply: one shard of capacity C (2,000), 2 sketch rows of byte
counters saturating at 15, halved every 10*C lookups; ties keep the resident entry; with
`spared2` (what ships since session 15), an entry spared twice by admission without being
used in between goes to the next newcomer.

    python3 bench/cache_policy_sim.py

Patterns: a cycle through 2*C tokens, the same cycled by two threads half a cycle apart
(the 200k row), a Zipf(0.9) skew over 5*C, a uniform working set of 2*C that is replaced
entirely halfway, the Zipf skew whose hot set moves halfway, Zipf users whose tokens are
replaced by refreshes, and a sliding window of users. Prints the hit ratio over the whole
sequence, warm-up included. Not the cache itself: a check of the policy's shape, not of the
code.
"""
import random
def run(C, seq, tiny, spare=None):
    slots=[]; used=[]; spared=[]; idx={}; hand=0; hits=0
    W=1
    while W < C: W*=2
    sk=[[0]*W for _ in range(2)]; cnt=0; full=False
    def cells(k):
        h=(k*0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF; return ((h>>8) & (W-1), (h>>40)&(W-1))
    def rec(k):
        nonlocal cnt
        a,b=cells(k)
        if sk[0][a]<15: sk[0][a]+=1
        if sk[1][b]<15: sk[1][b]+=1
        cnt+=1
        if cnt>=10*C:
            cnt=0
            for r in sk:
                for j in range(W): r[j]//=2
    def est(k):
        a,b=cells(k); return min(sk[0][a],sk[1][b])
    for k in seq:
        if full and tiny: rec(k)
        i=idx.get(k)
        if i is not None:
            hits+=1; used[i]=True; continue
        if len(slots)<C:
            idx[k]=len(slots); slots.append(k); used.append(False); spared.append(0)
            if len(slots)==C: full=True
            continue
        n=len(slots)
        while True:
            i=hand%n; hand=(i+1)%n
            u=used[i]; used[i]=False
            if not u: break
            spared[i]=0
        if tiny and not (spare and spared[i]>=spare) and est(slots[i])>=est(k):
            spared[i]+=1; continue
        del idx[slots[i]]; slots[i]=k; used[i]=False; spared[i]=0; idx[k]=i
    return hits/len(seq)
C=2000
random.seed(1)
loop=[i for _ in range(10) for i in range(2*C)]
N=10000
w=[1/(r+1)**0.9 for r in range(N)]
zipf=random.choices(range(N),weights=w,k=100000)
shift=[random.randrange(2*C) if j<50000 else 2*C+random.randrange(2*C) for j in range(100000)]
# zipf whose hot set moves halfway
zshift=[z if j<50000 else z+N for j,z in enumerate(zipf)]
# the bench's 200k row: two wrk threads through 2*C tokens, half a cycle apart, interleaved
two=[]
for j in range(5*2*C//2):
    two += [j % (2*C), (j + C) % (2*C)]
# a token cache's own pattern: Zipf users whose token is replaced by a refresh every 20,000
# requests (staggered), so that the old token, often asked for until then, is never asked
# for again
random.seed(2)
users=random.choices(range(N),weights=w,k=150000)
refresh=[u*1000 + (j + u*37)//20000 for j,u in enumerate(users)]
# a window of 1.5*C users that slides on by one every 5 requests
slide=[j//5 + random.randrange(3*C//2) for j in range(150000)]
for label, tiny, spare in (("clock          ", False, None), ("tinylfu        ", True, None),
                           ("tinylfu+spared2", True, 2)):
    print(label, "loop %.3f"%run(C,loop,tiny,spare), "two-thread loop %.3f"%run(C,two,tiny,spare),
          "zipf %.3f"%run(C,zipf,tiny,spare), "uniform-shift %.3f"%run(C,shift,tiny,spare),
          "zipf-shift %.3f"%run(C,zshift,tiny,spare), "refresh %.3f"%run(C,refresh,tiny,spare),
          "slide %.3f"%run(C,slide,tiny,spare))
