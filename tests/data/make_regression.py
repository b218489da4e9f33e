"""Regression fixture of the lenalidomide-CLL model, written by the code before the issue-12
redesign (commit 733937e).  Rerun only to regenerate on purpose."""
import numpy as np, pandas as pd, jax.numpy as jnp
import lenapk
from lenapk.fit import Objective
from lenapk.solve import SolverSettings

out = {}
model = lenapk.LenalidomideCLL()
typ = model.default_params()
regs = lenapk.load_regimens()
rel = typ.replace(relapsed=1.0, anc0=2.2, plt0=110.0, alc0=60.0, crcl=55.0, ffm=48.0)
reg6 = lenapk.Regimen.from_daily_doses(np.asarray(regs["rr_10_to_25_cont"].doses)[:168], name="rr6")
# 1. typical patient, 6 cycles, no rules
df = lenapk.simulate(reg6, rel)
for c in df.columns: out[f"sim_plain/{c}"] = df[c].to_numpy(float)
# 2. label rule
df = lenapk.simulate(reg6, rel, rules=lenapk.label_rule())
for c in df.columns: out[f"sim_label/{c}"] = df[c].to_numpy(float)
# 3. within-day output times, early-stage regimen (2 cycles)
early = lenapk.Regimen.from_daily_doses(np.asarray(regs["early_2p5_then_5_cont"].doses)[:56], name="e2")
times = [0.0, 0.1, 0.25, 1.0, 3.5, 10.04, 27.9, 40.0, 56.0]
df = lenapk.simulate(early, typ, times=times)
for c in df.columns: out[f"sim_times/{c}"] = df[c].to_numpy(float)
# 4. cohort
reg2 = lenapk.Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15, name="t2")
coh = lenapk.cohort(reg2, n=12, seed=3, setting="relapsed", rules=lenapk.label_rule(), block_size=8, progress=False)
coh.to_parquet("tests/data/regression_cohort.parquet")
# 5. fit objective at the defaults, bundled observations, 8 patients per study
obj = Objective(lenapk.load_observations(), n_patients=8, seed=0)
obj.freeze_doses(obj.x0)
v, g = obj.value_and_grad(obj.x0)
out["objective/value"] = np.array([v]); out["objective/grad"] = np.asarray(g)
out["objective/free"] = np.array(obj.free)
t = obj.table_at(obj.x0)
out["objective/predicted"] = t["predicted"].to_numpy(float)
out["objective/predicted_smooth"] = t["predicted_smooth"].to_numpy(float)
# 6. compare
cmp = lenapk.compare({"a": reg2, "b": lenapk.Regimen.cycles(5, n_cycles=2, days_on=21, name="b")}, n=8, seed=1,
                     rules=lenapk.label_rule(), setting="relapsed")
cmp.to_parquet("tests/data/regression_compare.parquet")
np.savez_compressed("tests/data/regression_cll.npz", **out)
print("ok", len(out))
