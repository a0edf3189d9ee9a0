"""mpicolor: the dominant colours of every frame of a video collection, at cluster scale."""

__version__ = "0.2.0.dev0"
