"""The data layer's one error: a file, column or source that cannot be used, named in one line."""


class DataError(ValueError):
  """A data source that cannot be used; the message names the file, column or setting to fix."""
