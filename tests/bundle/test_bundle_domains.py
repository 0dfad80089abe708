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
    assert "rigid domain(s)" in text
    # 32 particles are too few to check a fit on a held-out half: the copy is the displaced model
    assert "did not match the half it was not fitted to" in text and "under 40 particles" in text
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


def test_fitdomains_log_reads_and_one_domain_says_why(cx, tiny_trained):
    """Issue 29 item 18: the log line says which particles, and a single domain is
    explained from the engine's residuals (each case of its rule)."""
    from chimerax.gaussianem.commands.explore import one_domain_note
    from gaussianem.analysis.domains import Domains
    run(cx, f"gaussianem open {tiny_trained}")
    run(cx, "gaussianem show particle 7")
    copy, text = logged(cx, "gaussianem fitdomains particles 16 steps 2 sort latent")
    assert "fitting rigid domains to the 16 particles nearest the state shown in latent space (2 steps;" in text
    n = len(set(map(tuple, copy.atoms.colors)))
    assert ("only one rigid domain was found" in text) == (n == 1)
    one = lambda residual, motion=1.0: Domains(np.zeros(99, int), np.zeros(495, int), residual, motion)  # noqa: E731
    assert one_domain_note(Domains(np.r_[np.zeros(50, int), np.ones(49, int)], np.zeros(495, int))) is None
    assert "hardly moves the model" in one_domain_note(one([0.0], motion=0.0))
    assert "too few residues (99)" in one_domain_note(one([1.0]))
    assert "moves as one rigid body" in one_domain_note(one([1.0, 0.9]))
    note = one_domain_note(one([1.049, 0.205]))            # the demo's: the absent chain (18 residues) moved alone
    assert "1.05 -> 0.205 A^2" in note and "fewer than 20 residues" in note
    assert note.endswith("The whole model was fitted as one rigid body")
