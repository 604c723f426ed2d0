"""GET /api/explain: the tutorial's worked example, exactly `convnet explain --json`'s object (the
same function, the same defaults); its settings are query parameters."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from convnet.errors import SettingError, SpecError
from convnet.scratch.explain import worked_example

# The settings are bounded: the example is a 4x4 image, and padding or a stride of millions would
# only make a request allocate and compute for nothing.
EXPLAIN_MAX = 8

router = APIRouter(tags=["explain"])


@router.get("/api/explain", summary="The worked example, as `convnet explain --json`")
async def explain(
    kernel: Annotated[int, Query(ge=1, le=EXPLAIN_MAX, description="filter size k (k x k per channel)")] = 2,
    stride: Annotated[int, Query(ge=1, le=EXPLAIN_MAX, description="convolution stride")] = 1,
    padding: Annotated[int, Query(ge=0, le=EXPLAIN_MAX, description="zeros added around the image")] = 0,
    pool: Annotated[int, Query(ge=1, le=EXPLAIN_MAX, description="pooling window size")] = 2,
    pool_stride: Annotated[int, Query(ge=1, le=EXPLAIN_MAX, description="pooling stride")] = 1,
    seed: Annotated[int, Query(ge=0, lt=2**32, description="draws the image, the filter and the dense weights")] = 0,
) -> JSONResponse:
    try:
        return JSONResponse(worked_example(None, seed, kernel, stride, padding, pool, pool_stride))
    except SettingError as e:  # the library names its settings; here they are query parameters
        raise SpecError(e.phrase(repr)) from None  # 'pool_stride'
