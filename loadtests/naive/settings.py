"""The product's settings, with the urls of the naive baseline (see loadtests/naive)."""

from core.settings import *  # noqa: F401,F403

ROOT_URLCONF = "loadtests.naive.urls"
