"""Training-step memory at a realistic size, measured on CPU at small batches.

One forward + backward of the real pieces (residual encoder input with the consensus
projection, both decoders, the band-limited renderer, an l2 loss) for 20,000 random
Gaussians at box 128; prints the peak-RSS growth. Memory is linear in the batch, so two
small batches give the per-particle cost and the extrapolation to batch 256
(docs/benchmarks.md, "GPU readiness").

  .venv/bin/python benchmarks/memory_estimate.py 4
  .venv/bin/python benchmarks/memory_estimate.py 8
"""
import resource, sys, time, torch
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "engine"))
from gaussianem.model.gaussians import GaussianSet
from gaussianem.model.networks import HeterogeneityModel, ModelConfig
from gaussianem.physics import render, poses
import numpy as np
torch.set_num_threads(1)
N, box = 20000, 128
B = int(sys.argv[1])
g = torch.Generator().manual_seed(0)
base = GaussianSet(torch.randn(N, 3, generator=g) * 40, torch.rand(N, generator=g) + 0.5, torch.full((N,), 2.0))
m = HeterogeneityModel(ModelConfig(box=box, zdim=10, zdim_conf=8, zdim_comp=2, encoder_input="residual"), base)
R = torch.from_numpy(poses.random_rotations(B, np.random.default_rng(0))).float()
sh = torch.zeros(B, 2); imgs = torch.randn(B, box, box)
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
r0 = rss(); t = time.time()
with torch.no_grad():
    ref = render.project(m.centres, m.amplitudes, m.widths, R, sh, box, 1.0)
mu, lv = m(imgs, ref)
out = m.decode(mu)
pred = render.project(out["centres"], out["amplitudes"], out["widths"], R, sh, box, 1.0, lowpass=8.0)
loss = ((pred - imgs) ** 2).mean()
loss.backward()
print(f"batch {B}: peak RSS growth {rss() - r0:.0f} MB, {time.time() - t:.1f} s")
