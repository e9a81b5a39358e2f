"""A seeded chance baseline: a uniformly random letter among the item's options."""
from __future__ import annotations

import hashlib
import random

from .base import Adapter, ChatRequest, ChatResponse


class RandomAdapter(Adapter):
    """A uniform random letter per item: the chance floor every model is compared against."""
    def __init__(self, seed: int | None = 0):
        self.spec = "random"
        self.seed = 0 if seed is None else seed

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """A letter drawn from the item id and the seed: the same item, the same answer."""
        # Seeded per item, so the answer does not depend on the order requests complete in.
        digest = hashlib.sha256(f"{self.seed}:{request.item_id}".encode()).digest()
        letter = random.Random(digest).choice(request.option_letters or "A")
        return ChatResponse(text=letter, finish_reason="stop", usage=None, latency_s=0.0)

    def describe(self) -> dict:
        """The seed, so a random baseline can be reproduced."""
        return {"spec": self.spec, "seed": self.seed}
