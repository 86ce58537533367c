"""What both loops share: errors (`errors`), entry points of user code (`plugins`), progress lines (`progress`)
and the loop skeleton as Prefect stages (`stages`)."""
