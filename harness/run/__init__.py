"""Run: the pipeline that sends items to a model (`runner`), with one retry policy, the response
cache, the image feed and concurrency control."""
