"""One exception family for everything the LiDAR library refuses.

Every failure caused by the input (a bad file, a missing CRS, a scan without
ground) raises a :class:`LidarError` subclass whose message a user can act on.
Callers (process plugins, the upload validator, the CLI) catch ``LidarError``
and turn it into a 4xx / a readable job error; anything else is a bug.
"""
from __future__ import annotations


class LidarError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidPointCloud(LidarError):
    """The file is not a readable LAS/LAZ point cloud (bad signature, version,
    point format, scale, bounds, or a header that disagrees with the file)."""


class TruncatedFile(InvalidPointCloud):
    """The header promises more data than the file holds."""


class CorruptFile(InvalidPointCloud):
    """The compressed point data cannot be decoded."""


class UnknownCRS(LidarError):
    """No usable coordinate reference system: none in the file and no override."""


class IncompatibleInputs(LidarError):
    """Several files given as one scan do not share a CRS or point units."""


class NoGroundPoints(LidarError):
    """A terrain model was requested but no ground point exists or can be found."""


class EmptyResult(LidarError):
    """The inputs hold too few points for the requested product."""


class InvalidParameter(LidarError, ValueError):
    """A step parameter is out of its domain (negative resolution, ...)."""


class InvalidPart(LidarError):
    """A tile part handed between workers is not one this library wrote (or holds Python objects)."""
