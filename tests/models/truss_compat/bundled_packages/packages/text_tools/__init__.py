from text_tools.shout import shout

__all__ = ["shout"]
