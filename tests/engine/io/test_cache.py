"""The particle cache: the same images as cropping on the fly, built once and reused,
rebuilt when the stacks change; training with --cache gives the run it gives without."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from gaussianem.io.cache import cache_dir_for, cache_key, cached_images
from gaussianem.io.images import ParticleImages
from gaussianem.io.particles import load_particles


def test_cache_matches_cropping_on_the_fly_and_is_reused(tiny_sim, tmp_path):
    data = load_particles(tiny_sim / "particles.star")
    folder = str(tmp_path / "cache")
    msgs = []

    class P:
        def message(self, m):
            msgs.append(m)

        def event(self, *a, **k):
            pass

    imgs = cached_images(data, 16, folder, str(tiny_sim / "particles.star"), invert=True, progress=P())
    ref = ParticleImages(data, box=16, invert=True)
    idx = [5, 0, 200, 17, 5]
    a, b = imgs.__getitems__(idx), ref.__getitems__(idx)
    assert torch.equal(a["index"], b["index"])
    assert torch.allclose(a["image"], b["image"], atol=1e-5)
    assert np.allclose(imgs.apix, ref.apix)
    assert any("built" in m for m in msgs)
    files = sorted(os.listdir(folder))
    assert len(files) == 2 and not any(f.startswith(".") for f in files)      # stack + record, no temporaries
    msgs.clear()
    cached_images(data, 16, folder, str(tiny_sim / "particles.star"), progress=P())
    assert any("reused" in m for m in msgs)
    assert cache_key(data, 8) != cache_key(data, 16)
    assert cache_dir_for("auto", "/d/p.star") == "/d/.gaussianem_cache" and cache_dir_for(None, "x") is None


def test_training_with_the_cache_matches_training_without(tiny_sim, tmp_path):
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    kw = dict(particles=str(tiny_sim / "particles.star"), consensus=str(tiny_sim / "consensus.mrc"), epochs=1,
              batch_size=32, zdim=2, fit_steps=20, device="cpu", downsample=16, lowpass_start=None)
    train(TrainConfig(outdir=str(tmp_path / "plain"), **kw))
    train(TrainConfig(outdir=str(tmp_path / "cached"), cache=str(tmp_path / "c"), **kw))
    za = np.load(tmp_path / "plain" / "latents.npz")["z"]
    zb = np.load(tmp_path / "cached" / "latents.npz")["z"]
    assert np.abs(za - zb).max() < 1e-3 * np.abs(za).max() + 1e-5


def _built(tiny_sim, tmp_path):
    data = load_particles(tiny_sim / "particles.star")
    folder = str(tmp_path / "cache")
    cached_images(data, 16, folder, str(tiny_sim / "particles.star"))
    stack = [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".mrcs")][0]
    return data, folder, stack


def test_a_damaged_cache_is_named_with_how_to_rebuild_it(tiny_sim, tmp_path):
    """A cache whose images were zeroed, or cut short, is reported as the cache's fault
    (its file named, and how to have it rebuilt), not as the source images'."""
    from gaussianem.errors import InputError
    from gaussianem.io.mrc import read_header
    data, folder, stack = _built(tiny_sim, tmp_path)
    offset, size = read_header(stack).data_offset, os.path.getsize(stack)
    with open(stack, "r+b") as f:                       # the images zeroed, the header kept
        f.seek(offset)
        f.write(bytes(size - offset))
    with pytest.raises(InputError, match="particle cache") as e:
        cached_images(data, 16, folder, str(tiny_sim / "particles.star"))
    assert stack in str(e.value) and "rebuil" in str(e.value) and "particles.mrcs" not in str(e.value)
    _, folder, stack = _built(tiny_sim, tmp_path / "b")
    with open(stack, "r+b") as f:                       # cut short (a full disk, a copy stopped)
        f.truncate(size - 16 * 16 * 4 * 10)
    with pytest.raises(InputError, match="particle cache") as e:
        cached_images(data, 16, folder, str(tiny_sim / "particles.star"))
    assert stack in str(e.value) and "rebuil" in str(e.value) and "truncated" in str(e.value)


def test_a_killed_builds_temporary_file_is_removed_by_the_next_build(tiny_sim, tmp_path):
    """A build killed outright (no clean-up runs) leaves its temporary stack: the next use of
    the folder removes it once it is stale (not written to for minutes), and leaves a build
    in progress (recently written) alone."""
    import time
    data = load_particles(tiny_sim / "particles.star")
    folder = tmp_path / "cache"
    folder.mkdir()
    key = cache_key(data, 16)
    stale, live = folder / f".tmp-0123456789ab-{key}.mrcs", folder / f".tmp-ba9876543210-{key}.mrcs"
    stale.write_bytes(bytes(1000))
    live.write_bytes(bytes(1000))
    old = time.time() - 3600
    os.utime(stale, (old, old))
    msgs = []

    class P:
        def message(self, m):
            msgs.append(m)

    cached_images(data, 16, str(folder), str(tiny_sim / "particles.star"), progress=P())
    assert not stale.exists() and live.exists()
    assert any("temporary" in m and stale.name in m for m in msgs)
