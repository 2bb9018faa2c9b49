"""Backbones with named multi-scale taps (see ``common.Backbone``)."""
