"""Colormaps: EOS's list of them (``listing``, pure) and asking EOS about them (``check``)."""
