import numpy as np, tiltlab, time, sys, faulthandler
faulthandler.dump_traceback_later(200, exit=True)
n=int(sys.argv[1]); fac=float(sys.argv[2])
m = tiltlab.Memoryless(np.log([0.7,0.3]), [0.,1.], n)
t=time.time()
b = m.best_of_n(log_n=fac*n)
print(f"n={n} ln={fac}n  {time.time()-t:.2f}s kl={b.kl!r} ER={b.expected_reward!r} mass={b.total_mass!r} theta={b.theta} virt={b._virtual} nvals={b.values.size} klmax={m.kl_max}")
r = b.sample_rewards(5, rng=0); print(r)
