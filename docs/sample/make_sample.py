"""Regenerate docs/sample/gull-point.pdf, the sample document of the README's main job.

    python docs/sample/make_sample.py

The text is original (written for ragchat, CC0); the PDF is written by tests/pdfmaker.py.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from pdfmaker import make_pdf  # noqa: E402

PAGES = [
    """The Gull Point Light: A Short History

Gull Point is a spit of granite and shingle at the mouth of the Alder estuary. For most of
the nineteenth century ships bound for the harbour at Marrow Bay had to thread the shoals
off the point by daylight, and the wreck of the schooner Perseverance in the winter of
1866, with the loss of eleven crew, finally moved the harbour board to act.

The lighthouse was designed and built by the civil engineer Margaret Alder, the first woman
to hold a contract from the Marrow Bay harbour board. Work began in the spring of 1869.
Alder chose local granite for the tower, which rises 31 metres above the rock, and had the
stones cut to dovetail into one another so that the whole course would resist the waves as
a single mass. The light was first lit on 14 October 1871.

The first keeper was Tobias Wren, a former ship's carpenter, who kept the light for
twenty-six years with his wife Hester and, later, their two sons. Wren's logbooks survive
in the county archive and record every ship he saw pass the point, the weather at each
watch, and the quantity of oil burned each night.""",
    """The Lamp and the Fog Signal

The original lamp burned colza oil and later paraffin, magnified by a first-order Fresnel
lens made in Paris. The light showed a white flash every ten seconds and could be seen
from 18 nautical miles away in clear weather. In 1904 the oil lamp was replaced by an
incandescent mantle burning paraffin vapour, which doubled the brightness of the beam.

Fog is common on this coast in late summer. In 1880 a fog bell was hung on the gallery,
but crews complained that it could not be heard above the surf. It was replaced in 1897
by a compressed-air foghorn, sounding two blasts every minute, powered by an oil engine in
a brick house at the foot of the tower.

The Great Storm of 1893

During the storm of 27 November 1893 waves broke over the lantern room and shattered
three panes of the lantern glass. Tobias Wren and his elder son kept the light burning
through the night by shielding the lamp with a sail. The following morning they rowed out
to the brig Curlew, which had struck the outer shoal, and brought her crew of seven ashore.
Both men were awarded silver medals by the Royal Humane Society for the rescue.""",
    """Automation and the Museum

The light was electrified in 1936, when a cable was laid across the estuary. The last
keepers, the brothers Daniel and Owen Pryce, left the station when the light was automated
in 1962; since then it has been monitored from the harbour office at Marrow Bay. The
foghorn was switched off for good in 1987 after satellite navigation made it redundant.

In 1988 the keepers' cottages were opened as a museum by the Gull Point Trust, a charity
founded by the great-granddaughter of Tobias Wren. The museum displays the Fresnel lens,
which was removed when a modern LED lantern was fitted in 2011, together with Wren's
logbooks and the silver medals from the rescue of 1893. The tower is open to visitors on
summer weekends; the climb to the gallery is 112 steps.""",
]


def wrap(page: str) -> str:
    paragraphs = page.split("\n\n")
    return "\n\n".join("\n".join(textwrap.wrap(" ".join(p.split()), 88)) for p in paragraphs)


if __name__ == "__main__":
    out = make_pdf(
        [wrap(p) for p in PAGES],
        HERE / "gull-point.pdf",
        header="Gull Point Light",
        footer="{page}",
    )
    print(out)
