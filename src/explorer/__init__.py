"""The GaussianEM Latent Explorer tool: :mod:`.tool` (the ChimeraX ToolInstance, and the
worker thread that generates states), :mod:`.panel` (a plain Qt widget that knows nothing
of ChimeraX, with its player in :mod:`.panel_player` and region selection in
:mod:`.panel_selection`), :mod:`.latent_plot` (the scatter plot)."""
