"""Dataset cards: the facts percept relies on for each dataset of the PerceptCLIP study, in one place.

A :class:`~percept.data.dataset_card.DatasetCard` says what a prepared manifest must contain (label columns, their valid range, class
order), what the official download looks like (``official_layout``, read by :mod:`percept.data.prepare`),
and how the paper uses the dataset (paper §4, App. A.1: image counts, splits, LoDa-style IQA replicas and
preprocessing). The markdown cards in ``data_manifests/cards/NAME.md`` are rendered from these objects by
:func:`render_card_markdown` (regenerate with ``python -m percept.data.cards``); a test checks that the
committed files equal the rendered ones, so the two never drift.

IQA facts marked "LoDa" come from the LoDa code (Xu et al. 2024a, github.com/NeosXu/LoDa): its
``scripts/process_*.py`` (metadata, 10 splits, downsampling), ``src/dataset/*_dataset.py`` (which image
folder is read) and ``config/job/train_loda_*.yaml`` (``train.patch_num`` = replicas per epoch,
``test.patch_num`` = 15 crops).
"""
from __future__ import annotations

from pathlib import Path

from ..core.resources import resource_path
from ..core.tasks import EMOSET_CLASSES, EMOTIONROI_CLASSES
from .dataset_card import DatasetCard, render_card_markdown

CARDS_DIR = resource_path("data_manifests", "cards")   # package data (see percept.core.resources)


_LODA = "LoDa (github.com/NeosXu/LoDa, scripts/process_{}.py and src/dataset/{}_dataset.py)"
_IQA_SPLITS = ("Paper §4.1/§5.1: the 10 splits of Xu et al. (2024a, LoDa): 80% train / 20% test, "
               "drawn with Python `random.seed(3407)` then 10 successive `random.shuffle`s of the image "
               "indices{}; the paper further reserves 10% of each training set for validation. Splits are "
               "computed by percept's own seeded code over the manifest rows in order (`percept.data.pinned`), "
               "not stored in the manifest.")
_PINNED = (" Pinned: the committed split file `data_manifests/splits/{0}.csv` (with a checksummed sidecar, "
           "written by `python tools/pin_splits.py`) is used instead of recomputing, so a partial "
           "download keeps each image in the part the full dataset gives it.")
_IQA_AUG = (" Training (paper App. A.1, as LoDa): independent random horizontal and vertical flips (p = 0.5) "
            "and a random 224x224 crop per replica; test: mean over 15 random 224x224 crops.")
_MEM_PRE = ("Paper App. A.1: resize the shorter side to 224 (aspect ratio kept), centre crop 224x224, "
            "for training and test.")
_EMO_PRE = ("Paper App. A.1 (after Yang et al. 2023): training RandomResizedCrop 224 + horizontal flip "
            "(p = 0.5); test: shorter side to 224, centre crop 224.")

CARDS: dict[str, DatasetCard] = {c.name: c for c in [
    # ------------------------------------------------------------------ IQA, authentic distortions
    DatasetCard(
        name="livec", paper_name="LIVEC", paper_splits=10, title="LIVE In the Wild Image Quality Challenge (LIVEC)", task="iqa",
        label_column="quality", score_column="mos", label_range=(0.0, 100.0), classes=None,
        expected_images=1162, synthetic=False, train_replicas=5, quality_sign=1.0,
        official_url="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
        licence="UT Austin notice in README.txt: use, copy and redistribution allowed without fee provided the "
                "copyright notice is kept and the database is cited.",
        citation="D. Ghadiyaram and A. C. Bovik, Massive online crowdsourced study of subjective and objective "
                 "picture quality, IEEE TIP 25(1):372-387, 2016.",
        split_protocol=_IQA_SPLITS.format(" (1,162 images: 930 train / 232 test)") + _PINNED.format("livec"),
        preprocessing="LoDa reads the original 500x500 images in `Images/` (its script also writes a 384-px "
                      "copy, which its dataset class does not read); 5 replicas per epoch." + _IQA_AUG,
        official_layout="`ChallengeDB_release/Data/AllImages_release.mat` (key `AllImages_release`: 1,169x1 "
                        "cell array of file names), `Data/AllMOS_release.mat` (`AllMOS_release`, 1x1,169) and "
                        "`Data/AllStdDev_release.mat` (`AllStdDev_release`), all in the same order; images in "
                        "`ChallengeDB_release/Images/` (the 7 subject-training images t1..t7 in "
                        "`Images/trainingImages/`). `root` may be the folder holding `ChallengeDB_release` or "
                        "that folder itself.",
        notes="The first 7 entries of the .mat files are the training images t1.bmp..t7.bmp shown to subjects "
              "before the study; as LoDa and IQA-PyTorch (`meta_info[7:]`), percept drops them, leaving the "
              "1,162 test images (checked on the real files: entries 1-7 are t1..t7.bmp). The manifest keeps "
              "the official standard deviation as `std`."),
    DatasetCard(
        name="koniq10k", paper_name="KonIQ-10k", pre_resize=(384, 512), pre_resize_interpolation="bilinear", paper_splits=10, title="KonIQ-10k", task="iqa",
        label_column="quality", score_column="mos", label_range=(0.0, 100.0), classes=None,
        expected_images=10073, synthetic=False, train_replicas=3, quality_sign=1.0,
        official_url="http://database.mmsp-kn.de/koniq-10k-database.html",
        licence="See the KonIQ-10k release terms on the official page (images drawn from YFCC100M).",
        citation="V. Hosu, H. Lin, T. Sziranyi and D. Saupe, KonIQ-10k: An ecologically valid database for deep "
                 "learning of blind image quality assessment, IEEE TIP 29:4041-4056, 2020.",
        split_protocol=_IQA_SPLITS.format(" (8,058 train / 2,015 test)") + " The official `set` column "
                       "(training 7,058 / validation 1,000 / test 2,015) is kept in the manifest but the paper "
                       "does not use it." + _PINNED.format("koniq10k"),
        preprocessing="LoDa trains on 512x384 PNGs made by resizing the 1024x768 images to a shorter side of "
                      "384 (torchvision `Resize(384)`, bilinear); 3 replicas per epoch." + _IQA_AUG,
        official_layout="`koniq10k_distributions_sets.csv` (columns `image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,"
                        "set`; MOS on a 1-100 scale) and the images in `1024x768/` (or the official "
                        "`512x384/`: pass `image_dir=\"512x384\"`).",
        notes="Extra manifest columns: `std` (official SD), `c_total` (number of ratings), `set`."),
    DatasetCard(
        name="spaq", paper_name="SPAQ", pre_resize=384, pre_resize_interpolation="bilinear", paper_splits=10, title="SPAQ (Smartphone Photography Attribute and Quality)", task="iqa",
        label_column="quality", score_column="mos", label_range=(0.0, 100.0), classes=None,
        expected_images=11125, synthetic=False, train_replicas=3, quality_sign=1.0,
        official_url="https://github.com/h4nwei/SPAQ",
        licence="See the SPAQ release terms (github.com/h4nwei/SPAQ).",
        citation="Y. Fang, H. Zhu, Y. Zeng, K. Ma and Z. Wang, Perceptual quality assessment of smartphone "
                 "photography, CVPR 2020, pp. 3677-3686.",
        split_protocol=_IQA_SPLITS.format(" (8,900 train / 2,225 test)"),
        preprocessing="LoDa applies the EXIF orientation, resizes to a shorter side of 384 (torchvision "
                      "`Resize(384)`, bilinear) and saves PNGs in `TestImage_384/`; 3 replicas per epoch."
                      + _IQA_AUG,
        official_layout="`Annotations/MOS and Image attribute scores.xlsx` (columns `Image name`, `MOS`, "
                        "`Brightness`, `Colorfulness`, `Contrast`, `Noisiness`, `Sharpness`) and the images in "
                        "`TestImage/`. Reading .xlsx needs the optional package openpyxl; without it, export "
                        "the sheet to `Annotations/MOS and Image attribute scores.csv` (same columns).",
        notes="The five attribute scores are kept as lower-case columns."),
    DatasetCard(
        name="flive", paper_name="FLIVE", pre_resize=384, pre_resize_interpolation="bicubic", paper_splits=10, title="FLIVE (PaQ-2-PiQ, LIVE-FB)", task="iqa",
        label_column="quality", score_column="mos", label_range=(0.0, 100.0), classes=None,
        expected_images=39810, synthetic=False, train_replicas=1, quality_sign=1.0,
        official_url="https://github.com/niu-haoran/FLIVE_Database",
        licence="See the FLIVE / PaQ-2-PiQ release terms (github.com/niu-haoran/FLIVE_Database).",
        citation="Z. Ying, H. Niu, P. Gupta, D. Mahajan, D. Ghadiyaram and A. Bovik, From patches to pictures "
                 "(PaQ-2-PiQ): Mapping the perceptual space of picture quality, CVPR 2020, pp. 3575-3585.",
        split_protocol=_IQA_SPLITS.format(" (31,848 train / 7,962 test)"),
        preprocessing="LoDa resizes to a shorter side of 384 (bicubic) into `flive_384/` PNGs; 1 replica per "
                      "epoch." + _IQA_AUG,
        official_layout="`labels_image.csv` (whole-image labels; columns `name`, `mos`, ...; the patch label "
                        "files are not used) with `name` relative to the image folder, by default "
                        "`database/` (pass `image_dir=\"\"` when the names are relative to `root`). LoDa notes "
                        "that the FLIVE_Database preparation script has bugs and uses the one from "
                        "github.com/baidut/PaQ-2-PiQ (database_prep.ipynb) to assemble the images.",
        notes="Assumed from LoDa's script and the FLIVE repository; to be confirmed against a full download."),
    # ------------------------------------------------------------------ IQA, synthetic distortions
    DatasetCard(
        name="live", paper_name="LIVE", pre_resize=384, pre_resize_interpolation="bicubic", paper_splits=10, title="LIVE Image Quality Assessment Database, Release 2", task="iqa",
        label_column="quality", score_column="dmos", label_range=(-20.0, 120.0), classes=None,
        expected_images=779, synthetic=True, train_replicas=5, quality_sign=-1.0,
        official_url="https://live.ece.utexas.edu/research/quality/subjective.htm",
        licence="UT Austin copyright notice in the release: research use with the notice kept and the "
                "database cited.",
        citation="H. R. Sheikh, M. F. Sabir and A. C. Bovik, A statistical evaluation of recent full reference "
                 "image quality assessment algorithms, IEEE TIP 15(11):3440-3451, 2006.",
        split_protocol=_IQA_SPLITS.format(", split by reference image: 23 of the 29 references "
                                          "(`int(0.8 * 29)`) and all their distortions for training"),
        preprocessing="LoDa resizes to a shorter side of 384 (bicubic) into `images_384/`; 5 replicas per "
                      "epoch." + _IQA_AUG,
        official_layout="`dmos_realigned.mat` (keys `dmos_new`, `orgs`; 982 entries) or, with "
                        "`realigned=False`, `dmos.mat` (keys `dmos`, `orgs`); `refnames_all.mat` (key "
                        "`refnames_all`, 982 reference file names); folders `jp2k/` (img1..img227.bmp), `jpeg/` "
                        "(img1..img233), `wn/`, `gblur/`, `fastfading/` (img1..img174 each), in that order - "
                        "the order of the 982 entries.",
        notes="DMOS: lower = better. The manifest keeps the official DMOS in `dmos` and trains on "
              "`quality` = -dmos. Entries with `orgs == 1` are undistorted copies of the references and are "
              "dropped (982 - 203 = 779 distorted images, as LoDa). The realigned DMOS (used by LoDa) is "
              "nominally 0-100 but can fall slightly outside it, so the range check [-20, 120] only catches "
              "gross errors such as a wrong key. `reference` is the reference file name without extension; "
              "`distortion` is the folder."),
    DatasetCard(
        name="tid2013", paper_name="TID2013", paper_splits=10, title="TID2013", task="iqa",
        label_column="quality", score_column="mos", label_range=(0.0, 9.0), classes=None,
        expected_images=3000, synthetic=True, train_replicas=10, quality_sign=1.0,
        official_url="https://www.ponomarenko.info/tid2013.htm",
        licence="See the TID2013 release terms on the official page.",
        citation="N. Ponomarenko et al., Color image database TID2013: Peculiarities and preliminary results, "
                 "EUVIP 2013, pp. 106-111.",
        split_protocol=_IQA_SPLITS.format(", split by reference image: 20 of the 25 references for training"),
        preprocessing="LoDa reads the original 512x384 BMPs in `distorted_images/` (its 384-px copy is not "
                      "read); 10 replicas per epoch." + _IQA_AUG,
        official_layout="`mos_with_names.txt` (lines `MOS filename`, e.g. `5.51429 i01_01_1.bmp`: reference "
                        "01, distortion type 01, level 1), optional `mos_std.txt` (one value per line, same "
                        "order), images in `distorted_images/`.",
        notes="File-name case differs between the label file and the release for reference 25 (`I25` vs "
              "`i25`) and for extensions; percept matches names case-insensitively and writes the name as it "
              "exists on disk. `reference` is normalised to lower case (`i01`..`i25`); `distortion` and "
              "`level` are parsed from the name."),
    DatasetCard(
        name="kadid10k", paper_name="KADID-10k", pre_resize=384, pre_resize_interpolation="bicubic", paper_splits=10, title="KADID-10k", task="iqa",
        label_column="quality", score_column="dmos", label_range=(1.0, 5.0), classes=None,
        expected_images=10125, synthetic=True, train_replicas=3, quality_sign=1.0,
        official_url="http://database.mmsp-kn.de/kadid-10k-database.html",
        licence="See the KADID-10k release terms on the official page.",
        citation="H. Lin, V. Hosu and D. Saupe, KADID-10k: A large-scale artificially distorted IQA database, "
                 "QoMEX 2019.",
        split_protocol=_IQA_SPLITS.format(", split by reference image: `round(0.8 * 81)` = 65 of the 81 "
                                          "sorted references for training"),
        preprocessing="LoDa resizes to a shorter side of 384 (bicubic) into `images_384/` PNGs (the originals "
                      "are 512x384, so the size does not change); 3 replicas per epoch." + _IQA_AUG,
        official_layout="`dmos.csv` (columns `dist_img,ref_img,dmos,var`) and the images in `images/`.",
        notes="Despite its name, KADID-10k's `dmos` is a mean of 1-5 ACR ratings relative to the reference: "
              "higher = better, so `quality` = dmos (LoDa trains on it directly). `var` is kept."),
    # ------------------------------------------------------------------ memorability
    DatasetCard(
        name="lamem", paper_name="LaMem", paper_splits=5, title="LaMem (Large-scale Image Memorability)", task="memorability",
        label_column="memorability", score_column="memorability", label_range=(0.0, 1.0), classes=None,
        expected_images=58741, synthetic=False, train_replicas=None,
        official_url="http://memorability.csail.mit.edu/download.html",
        licence="See the LaMem release terms on the official page.",
        citation="A. Khosla, A. S. Raju, A. Torralba and A. Oliva, Understanding and predicting image "
                 "memorability at a large scale, ICCV 2015, pp. 2390-2398.",
        split_protocol="Paper §4.2/§5.2: the 5 official splits, mean SRCC and MSE over the 5. The paper says "
                       "75% train / 5% val / 20% test; the official files hold 45,000 / 3,741 / 10,000 images "
                       "(77% / 6% / 17%), which we use (a contradiction of the paper, listed in docs/deviations.md). Manifest columns `split1`.."
                       "`split5` in {train, val, test}.",
        preprocessing=_MEM_PRE,
        official_layout="`splits/{train,val,test}_{1..5}.txt`, lines `00051110.jpg 0.675000` (file, score); "
                        "images in `images/`.",
        notes="Each image appears in exactly one part of every split, but its score differs between splits "
              "(measured on the real files: only 13 of 58,741 images have the same score in all 5 splits; "
              "mean max-min spread 0.11). The official per-split scores are kept as `memorability_split1`.."
              "`memorability_split5` and are the targets for training and evaluation on split k; "
              "`memorability` is their mean, used only where no split is given (whole-dataset evaluation, "
              "e.g. a LaMem-trained model evaluated on all of LaMem).",
        split_label_column="memorability_split{k}"),
    DatasetCard(
        name="things", paper_name="THINGS", paper_splits=5, title="THINGS memorability", task="memorability",
        label_column="memorability", score_column="memorability", label_range=(-1.0, 1.0), classes=None,
        expected_images=26107, synthetic=False, train_replicas=None,
        official_url="https://things-initiative.org",
        licence="THINGS images: see the THINGS database terms; memorability scores: see Kramer et al. 2023 "
                "data availability.",
        citation="M. A. Kramer, M. N. Hebart, C. I. Baker and W. A. Bainbridge, The features underlying the "
                 "memorability of objects, Science Advances 9(17):eadd2981, 2023.",
        split_protocol="Paper §4.2 / Table A.1: the whole set evaluates generalisation of a model trained on "
                       "LaMem (no split). Tables 5, A.5 and A.9 also train on THINGS (single-dataset, and in the "
                       "memorability multi-dataset model with LaMem, §5.4) without stating a split; ours (a "
                       "deviation, listed in docs/deviations.md): 5 seeded splits 75% train / 5% val / 20% test of the "
                       "sorted concepts (LoDa's recipe, seed 3407), every image with its concept (manifest "
                       "column `concept`), so no concept is in two parts; mean over the 5 splits.",
        preprocessing=_MEM_PRE,
        official_layout="A CSV of per-image scores (Kramer et al. 2023, released on OSF, osf.io/5a7z6), read "
                        "with this header rule: the image column is the one column named `image`, "
                        "`image_name`, `filename` or `file` (case ignored; e.g. `aardvark_01b.jpg`) - none or "
                        "several is refused, naming the columns found; `memorability` = column `cr` (corrected "
                        "recognition, matched ignoring case) - a file without it is refused, naming the columns "
                        "found; `hr` (hit rate), `memorability`, `corrected_recognition` or any other column is "
                        "used only when given explicitly with option `score` (CLI `--option score=COLUMN`; a "
                        "column other than `cr` is warned about). ASSUMED, because the release could not be "
                        "checked offline: the file name (default `things_memorability.csv`, option "
                        "`labels_file`), the header spellings above (taken from the paper's CR and common "
                        "image-column names; a different spelling is refused, never guessed), and the image "
                        "layout `object_images/{concept}/{file}` (THINGS' own folders; concept = file name "
                        "without its last `_NNx` part; option `image_dir`). When images are checked they are "
                        "located by file name anywhere under `root`.",
        notes="Kramer et al. report corrected recognition (CR = hit rate - false-alarm rate) as an image's memorability; "
              "the paper says only 'the memorability score', so reading it as CR is ours. CR "
              "can in principle be negative, hence the range [-1, 1]; hit rate is a different score and is never "
              "taken in its place. The column used is recorded in the sidecar's `score_source`."),
    DatasetCard(
        name="sun_memorability", paper_name="SUN", paper_splits=25, title="SUN memorability (Isola et al. 2011)", task="memorability",
        label_column="memorability", score_column="memorability", label_range=(0.0, 1.0), classes=None,
        expected_images=2222, synthetic=False, train_replicas=None,
        official_url="http://web.mit.edu/phillipi/Public/WhatMakesAnImageMemorable/",
        licence="See the release terms on the official page (images from the SUN database).",
        citation="P. Isola, J. Xiao, A. Torralba and A. Oliva, What makes an image memorable?, CVPR 2011, "
                 "pp. 145-152.",
        split_protocol="Paper Table A.2: mean SRCC and MSE over the 25 official random splits (train/test "
                       "halves of the images with at least 20 subjects). Manifest columns `split1`..`split25` "
                       "in {train, test, none}; `none` (in neither half) is used as unassigned. The official "
                       "splits have no validation part, which model selection needs (§3.1); ours (a deviation, "
                       "listed in docs/deviations.md): 10% of each split's train images (`int(round(0.1 n_train))`, "
                       "chosen with `random.Random(3407 + k)`, as for IQA) become val; test is the official one.",
        preprocessing=_MEM_PRE,
        official_layout="Taken from the release's own MATLAB scripts (which read `sorted_target_data{i}.hits` "
                        "and `.misses` and write the random splits) and a third-party reader; ASSUMED because no "
                        "download could be checked offline: the file names, field names and array shapes below "
                        "(each is checked, and a mismatch is refused naming the file; running `percept prepare "
                        "sun_memorability` on the official download confirms them): "
                        "`Data/Experiment data/sorted_target_data.mat` (cell array `sorted_target_data` of "
                        "structs with `hits`, `misses`, `false_alarms`, `correct_rejections`, `filepath`), "
                        "`Data/Image data/target_images.mat` (`img`: 256x256x3xN uint8, the target images "
                        "themselves), `Data/Random splits/image_train_indices.mat` and "
                        "`image_test_indices.mat` (25 rows of 1-based indices). Only the first 2,222 targets "
                        "are scene images (the rest are textures) and are used.",
        notes="The images exist only inside `target_images.mat`; `prepare` extracts them once as "
              "`percept_images/NNNN.png` under `root` (which must then be writable). `memorability` = hit "
              "rate = hits / (hits + misses), Isola's score; the per-split subject-half hit rates "
              "(`subject_hrs1/2.mat`) are not imported."),
    DatasetCard(
        name="memcat", paper_name="MemCat", title="MemCat", task="memorability",
        label_column="memorability", score_column="memorability", label_range=(0.0, 1.0), classes=None,
        expected_images=10000, synthetic=False, train_replicas=None,
        official_url="https://osf.io/kvghu/",
        licence="See the MemCat release terms (images from ImageNet, COCO, Open Images and SUN keep their "
                "own terms).",
        citation="L. Goetschalckx and J. Wagemans, MemCat: a new category-based image set quantified on "
                 "memorability, PeerJ 7:e8169, 2019.",
        split_protocol="Not used for training or evaluation by the paper; App. A.2.1 notes that ResMem and "
                       "ViTMem were trained on LaMem + MemCat. No official splits.",
        preprocessing=_MEM_PRE,
        official_layout="`memcat_image_data.csv` (columns `image_file,category,subcategory,current_height,"
                        "current_width,source,searched_label,resize_factor,H,FA,n_resp,"
                        "memorability_wo_fa_correction,memorability_w_fa_correction`); images ASSUMED under "
                        "`images/{category}/{subcategory}/{image_file}` (the OSF zip holds "
                        "`memcat/{category}/...`). When images are checked they are located by file name "
                        "anywhere under `root`.",
        notes="`memorability` = `memorability_w_fa_correction`, the score MemCat defines and reports "
              "(hit rate corrected for false alarms); the uncorrected hit rate, H, FA and n_resp are kept."),
    # ------------------------------------------------------------------ emotion
    DatasetCard(
        name="emoset", paper_name="EmoSet", paper_splits=1, title="EmoSet-118K", task="emotion",
        label_column="label", score_column="label", label_range=(0.0, 7.0), classes=EMOSET_CLASSES,
        expected_images=118102, synthetic=False, train_replicas=None,
        official_url="https://vcc.tech/EmoSet",
        licence="See the EmoSet terms of use (research use; images from social networks and artistic sources).",
        citation="J. Yang, Q. Huang, T. Ding, D. Lischinski, D. Cohen-Or and H. Huang, EmoSet: A large-scale "
                 "visual emotion dataset with rich attributes, ICCV 2023, pp. 20383-20394.",
        split_protocol="Paper §4.3: the official split, 80% train / 5% val / 15% test (`train.json`, "
                       "`val.json`, `test.json`), kept as column `split`. 8-class accuracy; binary = first "
                       "four classes positive.",
        preprocessing=_EMO_PRE,
        official_layout="`train.json`, `val.json`, `test.json`: lists of `[emotion, image_id, image_path, "
                        "annotation_path]` (the official loader reads `item[2]` as the image path, e.g. "
                        "`image/amusement/amusement_00000.jpg`; 3-element items `[emotion, image_path, "
                        "annotation_path]` are accepted too); `info.json` with `emotion.label2idx` (checked "
                        "against the class order below when present).",
        notes="Format taken from the official EmoSet loader; to be confirmed against a full download."),
    DatasetCard(
        name="emotionroi", paper_name="EmotionROI", paper_splits=5, title="EmotionROI (Emotion6 images and classes)", task="emotion",
        label_column="label", score_column="label", label_range=(0.0, 5.0), classes=EMOTIONROI_CLASSES,
        expected_images=1980, synthetic=False, train_replicas=None,
        official_url="http://chenlab.ece.cornell.edu/downloads.html",
        licence="Academic research only; image copyright stays with the Flickr owners (Emotion6 readme).",
        citation="K.-C. Peng, A. Sadovnik, A. Gallagher and T. Chen, Where do emotions come from? Predicting "
                 "the emotion stimuli map, ICIP 2016; images and classes from Emotion6 (Peng et al., A mixed "
                 "bag of emotions, CVPR 2015).",
        split_protocol="Paper §4.3: 5 random splits, 75% train / 5% val / 20% test, drawn by percept's seeded "
                       "code (LoDa's recipe, seed 3407, not stratified)." + _PINNED.format("emotionroi")
                       + " 6-class accuracy; binary = joy, surprise positive.",
        preprocessing=_EMO_PRE,
        official_layout="`images/{anger,disgust,fear,joy,sadness,surprise}/N.jpg` (330 per class) and "
                        "`ground_truth.txt` (tab-separated, header row: file name relative to `images/`, "
                        "valence, arousal, 7-way emotion distribution incl. neutral). Without "
                        "`ground_truth.txt` the images are listed from the folders.",
        notes="`label` is the index of the folder name in the class order below (alphabetical = folder "
              "order). `valence`, `arousal` and the `prob_*` distribution are kept when `ground_truth.txt` "
              "is present."),
]}


USER_CARDS: dict[str, DatasetCard] = {}   # CSV datasets (csv-<stem>) opened in this process: percept.data.user_csv


def register_card(card: DatasetCard) -> DatasetCard:
    """Make ``card`` (a CSV dataset's, never one of the study's) known to :func:`get_card` in this process."""
    if card.name in CARDS:
        raise ValueError(f"{card.name!r} is the name of one of the study's datasets; a CSV dataset cannot take it")
    USER_CARDS[card.name] = card
    return card


def get_card(name: str) -> DatasetCard:
    """The card of dataset ``name`` (case-insensitive; or a registered CSV dataset's); ValueError listing the
    known names otherwise."""
    key = str(name).strip().lower()
    if key in USER_CARDS:
        return USER_CARDS[key]
    if key not in CARDS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(CARDS)} (or csv:PATH with --task)")
    return CARDS[key]


def write_card_files(directory: str | Path = CARDS_DIR) -> list[Path]:
    """(Re)write every markdown card into ``directory``; returns the paths written."""
    from ..core.files import atomic_write_bytes
    directory = Path(directory)
    paths = []
    for card in CARDS.values():
        path = directory / f"{card.name}.md"
        atomic_write_bytes(path, render_card_markdown(card).encode("utf-8"))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_card_files():
        print(p)


# The embedded demo sets' tasks (their labels: percept.data.sources.SYNTHETIC); here so that a task is known
# without importing torch (percept.study.results).
SYNTHETIC_TASKS = {"synthetic_iqa": "iqa", "synthetic_strength": "memorability", "synthetic_distortion": "emotion"}


def task_of(name: str, task: str | None = None) -> str | None:
    """The task of dataset ``name`` (``task``: a CSV dataset's own, from its config entry), or None when unknown.
    Torch-free."""
    if task:
        return task
    if name in SYNTHETIC_TASKS:
        return SYNTHETIC_TASKS[name]
    key = str(name).strip().lower()
    card = USER_CARDS.get(key) or CARDS.get(key)
    return card.task if card is not None else None

