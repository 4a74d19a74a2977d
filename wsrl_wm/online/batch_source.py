"""The rows of each update: online, retained offline and imagined, mixed at fixed ratios."""

import torch

Batch = dict[str, torch.Tensor]


class BatchSource:
    """(1 − retain − r)·online + retain·offline + r·model rows per batch, shuffled so that every
    UTD slice sees every source; exactly the online sample when retain = r = 0.

    The online rows are always a full batch's draw (then cut to size), and the model rows and
    their shuffle come from the imagination generator, so the real-data stream is the same for
    every r. While the model buffer is empty (everything gated), batches are all real.
    """

    def __init__(self, online, batch_size: int, sampler: torch.Generator,
                 imagination: torch.Generator, retained=None, retain_ratio: float = 0.0,
                 imagined=None, model_ratio: float = 0.0):
        self.online, self.retained, self.imagined = online, retained, imagined
        self.batch_size, self.retain_ratio, self.model_ratio = batch_size, retain_ratio, model_ratio
        self.sampler, self.imagination = sampler, imagination
        self.share_rows = [0, 0]  # model rows, all rows in the batches since `model_share`

    def sample(self, device: torch.device | str = "cpu") -> Batch:
        size = self.batch_size
        batch = self.online.sample(size, self.sampler)
        retained = round(self.retain_ratio * size) if self.retained is not None else 0
        imagined = (round(self.model_ratio * size)
                    if self.imagined is not None and len(self.imagined) else 0)
        self.share_rows = [self.share_rows[0] + imagined, self.share_rows[1] + size]
        if retained or imagined:
            parts = [{k: v[: size - retained - imagined] for k, v in batch.items()}]
            if retained:
                parts.append(self.retained.sample(retained, self.sampler))
            if imagined:
                parts.append(self.imagined.sample(imagined, self.imagination))
            order = torch.randperm(size, generator=self.sampler if retained else
                                   self.imagination)
            batch = {k: torch.cat([part[k] for part in parts])[order] for k in batch}
        return {k: v.to(device) for k, v in batch.items()}

    def model_share(self) -> float:
        """The realised share of model rows (after gating) since the last call."""
        model_rows, rows = self.share_rows
        self.share_rows = [0, 0]
        return model_rows / rows
