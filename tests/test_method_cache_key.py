"""What a method's cache key covers: what fit() learns from, not how the analysis uses it."""

import dataclasses

import pytest

from methods import METHODS, get_method


@pytest.mark.parametrize("name", sorted(METHODS))
def test_analysis_fields_are_fields_and_stay_out_of_the_cache_key(name):
    method = get_method(name)()
    key = method.cache_config()  # raises if analysis_fields names no field
    for field in type(method).analysis_fields:
        assert field not in key
    # keyed_when_set fields are left out only at their default (earlier caches stay valid)
    assert set(key) | set(type(method).analysis_fields) | set(type(method).keyed_when_set) \
        == set(method.config())


def test_an_analysis_setting_reuses_the_training_and_a_training_setting_does_not():
    vaevar = get_method("vaevar")()
    assert dataclasses.replace(vaevar, lam=4e4).cache_config() == vaevar.cache_config()
    assert dataclasses.replace(vaevar, epochs=7).cache_config() != vaevar.cache_config()
    diffda = get_method("diffda")()
    assert dataclasses.replace(diffda, steps=300, jump_length=10,
                               resamples=10).cache_config() == diffda.cache_config()
    assert dataclasses.replace(diffda, train_steps=7).cache_config() != diffda.cache_config()
