"""Backbones: token ids in, contextual hidden states out."""
