"""The generated world: the embedded default data set (catalogue with media, logs, ground truth).

    from sources.world import WorldConfig, generate_world, SIZES
    cfg = WorldConfig.for_size("tiny", seed=7)
    result = generate_world(cfg, out_dir)            # WorldResult: paths, counts, seconds
    media = render_item_media(item_id, world_seed, size="large")   # on-demand media of any item

Items have latent topics that drive their text, image and audio, and a separate collaborative latent; users have
drifting interests and a collaborative preference; a logged feed policy with known propensities serves slates; users
respond through `sources.world.response` (shared with the A/B simulator) and return the next day depending on
how satisfied they were, so LT metrics have a ground truth.

What content shows beyond topics is set by three knobs, all 0 by default (then no modality reveals the
collaborative latent or quality, and the world is byte for byte the one generated before the knobs existed):
`collab_in_content` = rho makes a share rho of the collaborative latent's variance come from the item's background
sound and its author's style, which its audio and frames show as smooth signatures (never its text; see
`catalogue` and `media`); `quality_in_frames` makes covers and frames show item quality, noisily; and
`quality_in_content` puts quality words in some titles.
"""

from sources.world.config import SIZES, WorldConfig
from sources.world.generate import WorldResult, generate_world
from sources.world.media import render_from_config, render_item_media

__all__ = ["SIZES", "WorldConfig", "WorldResult", "generate_world", "render_from_config", "render_item_media"]
