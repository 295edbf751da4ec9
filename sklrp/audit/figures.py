"""Small figure helpers shared by the audit's sections (the figures themselves come from sklrp.plotting)."""

__all__ = ["legend_outside"]


def legend_outside(ax):
    """Move an axes' legend to the right of the plot, where it covers no data; returns ``ax``."""
    if ax.get_legend() is not None:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return ax
