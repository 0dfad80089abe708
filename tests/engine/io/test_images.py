"""ParticleData, Fourier cropping, ParticleImages and make_loader."""

import os

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from gaussianem.io.images import ParticleImages, fourier_crop, make_loader, soft_window
from gaussianem.io.particles import load_particles

BOX = 32


def _dataset(folder, n_per_stack=(5, 4, 6)):
    """Stacks where image k of stack s is the constant 100 * s + k, and a RELION 3.1 .star
    listing every image in an interleaved order."""
    names, values = [], []
    for s, n in enumerate(n_per_stack):
        data = np.stack([np.full((BOX, BOX), 100.0 * s + k, np.float32) for k in range(n)])
        with mrcfile.new(os.path.join(folder, f"s{s}.mrcs"), overwrite=True) as m:
            m.set_data(data)
            m.set_image_stack()
        names += [f"{k + 1:06d}@s{s}.mrcs" for k in range(n)]
        values += [100.0 * s + k for k in range(n)]
    order = np.random.default_rng(0).permutation(len(names))
    names, values = [names[i] for i in order], np.array(values)[order]
    n = len(names)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"],
                           "rlnImagePixelSize": [1.25], "rlnImageSize": [BOX],
                           "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                           "rlnAmplitudeContrast": [0.1]})
    particles = pd.DataFrame({"rlnImageName": names, "rlnAngleRot": np.zeros(n),
                              "rlnAngleTilt": np.zeros(n), "rlnAnglePsi": np.arange(n, dtype=float),
                              "rlnOriginXAngst": np.zeros(n), "rlnOriginYAngst": np.zeros(n),
                              "rlnDefocusU": np.full(n, 1e4), "rlnDefocusV": np.full(n, 1e4),
                              "rlnDefocusAngle": np.zeros(n), "rlnOpticsGroup": np.ones(n, int)})
    path = os.path.join(folder, "particles.star")
    starfile.write({"optics": optics, "particles": particles}, path)
    return load_particles(path), values


def _gaussian(box, apix, sigma, centre_px):
    x = (np.arange(box) - centre_px) * apix
    return np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma ** 2))


def test_fourier_crop_matches_downsampled_gaussian():
    big, small, apix, sigma = 128, 48, 1.0, 5.0
    image = _gaussian(big, apix, sigma, big // 2)
    out = fourier_crop(torch.from_numpy(image), small).numpy()
    new_apix = apix * big / small
    expected = _gaussian(small, new_apix, sigma, small // 2)  # the same blob, coarser pixels
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # integrated intensity sum * apix^2 is preserved
    assert out.sum() * new_apix ** 2 == pytest.approx(image.sum() * apix ** 2, rel=1e-5)


def test_fourier_crop_is_exact_for_band_limited_images():
    big, small = 64, 16
    y, x = np.mgrid[0:big, 0:big]
    image = 3.0 + np.cos(2 * np.pi * (2 * x + 5 * y) / big + 0.4) - 0.5 * np.sin(2 * np.pi * 7 * y / big)
    ys, xs = np.mgrid[0:small, 0:small] * (big // small)  # the same positions, every 4th pixel
    expected = (3.0 + np.cos(2 * np.pi * (2 * xs + 5 * ys) / big + 0.4)
                - 0.5 * np.sin(2 * np.pi * 7 * ys / big))
    batch = torch.from_numpy(np.stack([image, -image]))
    out = fourier_crop(batch, small).numpy()
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
    np.testing.assert_allclose(out[1], -expected, atol=1e-5)


def test_fourier_crop_nyquist_and_errors():
    # a cosine exactly at the target's Nyquist frequency keeps its samples
    big, small = 32, 16
    y, x = np.mgrid[0:big, 0:big]
    image = (np.cos(np.pi * x / 2) + np.cos(np.pi * y / 2 + 0.3)  # period 4 px: 2 px after cropping
             + 0.5 * np.cos(np.pi * x / 2) * np.cos(np.pi * y / 2) + np.sin(2 * np.pi * 3 * x / big))
    out = fourier_crop(torch.from_numpy(image), small).numpy()
    np.testing.assert_allclose(out, image[::2, ::2], atol=1e-5)  # = sampling every 2nd pixel
    same = torch.rand(2, 8, 8)
    assert fourier_crop(same, 8) is same
    with pytest.raises(ValueError, match="even"):
        fourier_crop(same, 5)
    with pytest.raises(ValueError, match="larger"):
        fourier_crop(same, 10)


def test_particle_images_shapes_order_and_apix(tmp_path):
    data, values = _dataset(str(tmp_path))
    images = ParticleImages(data)
    assert len(images) == 15 and images.box == BOX
    np.testing.assert_allclose(images.apix, 1.25)
    item = images[3]
    assert item["index"] == 3 and item["image"].shape == (BOX, BOX)
    assert item["image"].dtype == torch.float32
    assert torch.all(item["image"] == values[3])
    cropped = ParticleImages(data, box=16, invert=True)
    np.testing.assert_allclose(cropped.apix, 1.25 * BOX / 16)
    idx = [14, 2, 7, 2, 0]
    batch = cropped.__getitems__(idx)
    assert batch["image"].shape == (5, 16, 16)
    assert batch["index"].tolist() == idx
    np.testing.assert_allclose(batch["image"].mean(dim=(1, 2)).numpy(), -values[idx], atol=1e-3)
    for k, i in enumerate(idx):
        torch.testing.assert_close(batch["image"][k], cropped[i]["image"])
    with pytest.raises(ValueError, match="even"):
        ParticleImages(data, box=15)
    with pytest.raises(ValueError, match="larger"):
        ParticleImages(data, box=64)


def test_window(tmp_path):
    data, values = _dataset(str(tmp_path))
    win = soft_window(BOX)
    assert win[BOX // 2, BOX // 2] == 1 and win[0, 0] == 0
    image = ParticleImages(data, window=True)[4]["image"]
    torch.testing.assert_close(image, win * float(values[4]))


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_order_shuffle_and_sampler(tmp_path, workers):
    data, values = _dataset(str(tmp_path))
    images = ParticleImages(data, box=16)
    loader = make_loader(images, batch_size=4, shuffle=False, num_workers=workers)
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [4, 4, 4, 3]
    index = torch.cat([b["index"] for b in batches]).numpy()
    np.testing.assert_array_equal(index, np.arange(15))
    means = torch.cat([b["image"].mean(dim=(1, 2)) for b in batches]).numpy()
    np.testing.assert_allclose(means, values, atol=1e-3)

    def shuffled(seed):
        return torch.cat([b["index"] for b in make_loader(images, 4, True, workers, seed=seed)]).numpy()
    first = shuffled(1)
    assert sorted(first.tolist()) == list(range(15)) and not np.array_equal(first, np.arange(15))
    np.testing.assert_array_equal(first, shuffled(1))

    chosen = [9, 3, 3, 12]
    got = list(make_loader(images, 3, False, workers, sampler=chosen))
    assert torch.cat([b["index"] for b in got]).tolist() == chosen
    np.testing.assert_allclose(torch.cat([b["image"] for b in got]).mean(dim=(1, 2)).numpy(),
                               values[chosen], atol=1e-3)


def test_subset(tmp_path):
    data, values = _dataset(str(tmp_path))
    sub = data.subset([4, 1])
    assert len(sub) == 2 and sub.box == data.box and sub.source == data.source
    np.testing.assert_array_equal(sub.image_paths, data.image_paths[[4, 1]])
    np.testing.assert_array_equal(sub.rotations, data.rotations[[4, 1]])
    np.testing.assert_array_equal(sub.ctf.defocus_u, data.ctf.defocus_u[[4, 1]])
    assert sub.table["rlnImageName"].tolist() == data.table["rlnImageName"].iloc[[4, 1]].tolist()
    mask = np.zeros(len(data), bool)
    mask[[0, 5]] = True
    assert len(data.subset(mask)) == 2
    images = ParticleImages(sub)
    assert float(images[1]["image"][0, 0]) == values[1]
