"""Preprocessing shared by the DataModules and the models' predictors: the image pipeline
(:mod:`.images`) and the tokenizers (:mod:`.text`). It imports neither ``datamodules``' readers nor
``lit_modules``: both depend on it, never the reverse."""
