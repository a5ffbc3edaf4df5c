"""The one place that reaches into scikeras' private members; the estimator uses the public hooks here.

scikeras 0.13 is unmaintained (its maintainer points to ``keras.wrappers``). It documents subclassing
through constructor keywords and public methods, but three things the project's estimator needs
exist only as private members: the compile arguments scikeras derives from its parameters,
the model build, and a fit's Keras callbacks (and the seed it drew for the fit). This module
overrides or reads them and nothing else; at import it checks they are still there, so a scikeras
release that renames one fails loudly, naming the member (tests/test_scikeras_adapter.py also
checks what they return). docs/scikeras.md says what replacing scikeras would take.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras
from scikeras.wrappers import KerasClassifier

# scikeras' private methods this module overrides, with the parameters (besides self) they take.
PRIVATE_METHODS = {"_get_compile_kwargs": (), "_build_keras_model": (), "_initialize_callbacks": ()}
# scikeras' private attributes this module reads: the fit's Keras callbacks, the seed a fit draws.
PRIVATE_ATTRIBUTES = ("_fit_callbacks", "_random_state")


def check_scikeras() -> None:
    """Raise ImportError naming the first private scikeras method that is gone or takes other arguments."""
    for name, expected in PRIVATE_METHODS.items():
        method = getattr(KerasClassifier, name, None)
        taken = tuple(inspect.signature(method).parameters)[1:] if callable(method) else None
        if taken != expected:
            raise ImportError(
                f"scikeras {getattr(__import__('scikeras'), '__version__', '?')}: KerasClassifier.{name} "
                f"{'is gone' if taken is None else f'takes {taken}'}; mnist_hpo/execution/scikeras_adapter.py needs it"
            )


check_scikeras()


class KerasClassifierAdapter(KerasClassifier):
    """scikeras' ``KerasClassifier`` with public hooks where it has only private ones."""

    def compile_arguments(self) -> dict[str, Any]:
        """The keyword arguments the model compiles with (here: scikeras' optimizer, loss, metrics)."""
        return super()._get_compile_kwargs()

    def _get_compile_kwargs(self) -> dict[str, Any]:
        return self.compile_arguments()

    def build_model(self, build: Callable[[], keras.Model]) -> keras.Model:
        """The model a fit starts from; ``build`` is scikeras' own build (here: called)."""
        return build()

    def _build_keras_model(self) -> keras.Model:
        return self.build_model(super()._build_keras_model)

    def extra_fit_callbacks(self) -> list[keras.callbacks.Callback]:
        """Keras callbacks added to the user's for every ``fit`` call (here: none)."""
        return []

    def _initialize_callbacks(self) -> None:
        super()._initialize_callbacks()
        self._fit_callbacks = [*self._fit_callbacks, *self.extra_fit_callbacks()]

    def drop_fit_callback(self, callback: keras.callbacks.Callback) -> None:
        """Remove ``callback`` from the fit's Keras callbacks (one that must not be pickled with the model)."""
        self._fit_callbacks = [kept for kept in getattr(self, "_fit_callbacks", []) if kept is not callback]

    @property
    def drawn_seed(self) -> Any:
        """The seed scikeras drew for this fit from ``random_state`` (part of what decides the built model)."""
        return self._random_state
