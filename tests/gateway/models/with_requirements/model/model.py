"""Needs a package trestle itself does not depend on: it comes from the deployment's own venv."""

import sys

from text_unidecode import unidecode


class Model:
    def predict(self, model_input):
        return {"ascii": unidecode(model_input["text"]), "prefix": sys.prefix}
