#!/bin/sh
echo "coverage reports are not supported in mp's offline build" >&2
exit 1
