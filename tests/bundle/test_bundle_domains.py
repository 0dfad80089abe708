"""``gaussianem fitdomains`` in real ChimeraX: a copy of the model at the state shown,
its rigid domains fitted to that state's particles, coloured by domain."""

import numpy as np
import pytest

from chimerax_fixture import logged, run


def test_fitdomains_adds_a_coloured_fitted_copy(cx, tiny_trained, tiny_sim):
    from gaussianem.analysis.domain_fit import fitted_models
    from gaussianem.io.models import bond_length_rms_change, read_model
    res = run(cx, f"gaussianem open {tiny_trained}")
    live = res.structure
    z = run(cx, "gaussianem show particle 7")
    before = live.atoms.coords.copy()
    copy, text = logged(cx, "gaussianem fitdomains particles 32 steps 5")
    assert copy is not live and not copy.deleted and copy in cx.models.list()
    assert "rigid domain(s)" in text and "fitted to 32 particles" in text
    np.testing.assert_array_equal(live.atoms.coords, before)          # the live model is left as it was
    # the engine's own fit of the same model, state and particles
    model = read_model(tiny_sim / "model.pdb")
    models, domains, fits = fitted_models(res.result, model, np.asarray(z)[None], res.live.interpolator,
                                          reference=res.live.reference, particles=32, steps=5,
                                          progress=lambda m: None)
    np.testing.assert_allclose(copy.atoms.coords, models[0].coords, atol=0.02)
    assert bond_length_rms_change(model, copy.atoms.coords) < 0.1
    colours = {tuple(c) for c in copy.atoms.colors}
    assert len(colours) == domains.n                                  # one colour per domain


def test_fitdomains_needs_a_model_and_a_state(cx, tiny_trained):
    from chimerax.core.errors import UserError
    run(cx, "close session")
    with pytest.raises(UserError, match="no GaussianEM result"):
        run(cx, "gaussianem fitdomains")
    res = run(cx, f"gaussianem open {tiny_trained}")
    run(cx, f"close #{res.structure.id_string}")
    with pytest.raises(UserError, match="no atomic model moves with the map"):
        run(cx, "gaussianem fitdomains")
