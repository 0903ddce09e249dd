"""Synthetic face anti-spoofing sample set built from real face photographs.

What it makes
-------------
For each *identity* five short clips (``(T, H, W, 3)`` uint8 RGB frames; the CLI writes them as
H.264 mp4 plus a ``manifest.csv``):

* ``live`` - the face **re-rendered from its textured 3D fit**: the Surrey Face Model (SFM) is
  fitted to the photo's 68 landmarks, every mesh vertex takes the photo position it projects to
  as texture coordinate, and each output pixel samples the photo through the barycentric
  interpolation of those coordinates (a per-pixel textured rasterisation). Over time the head
  turns (yaw within +-20 deg, pitch within +-10 deg, small roll, all smooth), the expression
  blendshapes vary smoothly, a Lambertian shading factor computed from the interpolated mesh
  normals follows a moving light, and the head moves against the background (the photo's own
  surroundings with the original face blurred away, drifting slightly like a hand-held camera).
  Depth and parallax therefore come from real 3D geometry.
* ``print1`` / ``print2`` - the identity's picture printed on a sheet of paper: colour loss
  (desaturation, paper white, lifted blacks), CMY halftone, paper texture, a bent sheet
  (cylindrical bend of a triangulated sheet, rasterised in perspective), hand-held motion
  (smooth 3D sheet rotation/translation plus tremor = per-frame homographies of the flat sheet),
  the paper border visible in some clips, over a synthetic room. ``print1`` is a glossy print
  (specular highlight moving with the sheet, slight bend), ``print2`` a matte one (stronger paper
  texture, lower contrast, stronger bend).
* ``replay1`` / ``replay2`` - the identity's *live* video played on a screen: gamma and
  white-balance shift, lifted blacks, moire (the screen's pixel grid evaluated at the screen
  position of every camera pixel, so it aliases into moving fringes as a filmed screen does), glare, rolling
  refresh banding, the device bezel, hand-held motion, over a synthetic room. ``replay1`` is a
  4:3 tablet, ``replay2`` a 16:9 phone (pillar-boxed video, cooler white point, more tremor).

Every clip then goes through one camera model: exposure drift, signal-dependent sensor noise,
8-bit quantisation (batched torch), slight blur and a JPEG round trip (OpenCV, frame by frame).

Rendering is batched torch over a clip's frames (one z-buffer rasterisation of all frames with
per-pixel triangle ids and barycentrics, :func:`pipeline.reconstruct.raster.rasterize`; the planar attacks are rasterised at
a quarter resolution and their smooth texture-coordinate maps upsampled), device-agnostic.

Sources and identities (be aware)
---------------------------------
Real photographs only (no generative model): ``obama.jpg`` and ``obama2.jpg`` (one person),
``biden.jpg`` from ``<shared>/data/faces`` (``obama-240p``/``-1080p`` are the same photo as
``obama.jpg`` and are skipped), scikit-image's ``astronaut``, the live face of
``<shared>/data/pad-samples/image_T1.jpg`` (turned upright by its EXIF orientation) and every
frontal face dlib finds in insightface's bundled group photo ``t1.jpg`` (six; each cropped
generously, the other faces of the photo blurred out). That is at most 10 distinct people.
(insightface's ``Tom_Hanks_54745.png`` is not used: a tight 112 px crop without forehead or
surroundings re-renders poorly.)

An *identity* here is a rendering subject. The first identities are distinct people. When more
identities are asked for than there are people, the extra ones are **derived from a person
already used** (another photo of that person where there is one, mirrored every other time,
with a hue/saturation shift of the head region - skin and hair - and a random offset of the SFM
shape coefficients, so that face shape differs visibly). A derived identity is *not* a new
person: its subject name is ``<person>-d<k>`` and **every identity of one person is placed in
the same split**, so train/dev/test stay disjoint in people, not only in subject names. With 12
identities (the default) there are 10 people and two derivatives (``obama-d1`` from
``obama2.jpg``, ``biden-d1`` mirrored), each in its person's split. Sixty clips of ten people
are a smoke-test / tutorial data set, not a benchmark: nothing measured on it says anything
about real attacks.

Splits are drawn per person, seeded: about half of the identities in ``train``, a quarter in
``dev`` and ``test`` (12 -> 6/3/3; at least one each from 3 identities on).

Determinism: every random choice comes from ``numpy.random.default_rng`` streams keyed by
``(seed, identity index, clip kind)``, so one clip can be regenerated alone and is byte-identical
(before video encoding) on the same machine, torch build and torch thread count; different
seeds give different compositions, motion and effects.

Conventions: images are ``(H, W, 3)`` uint8 RGB (``pipeline.base.types``: x right, y down, pixel
centres at integer coordinates); internal float images are ``(..., 3, H, W)`` in ``[0, 1]``. Mesh
vertices passed to the rasteriser are ``(B, V, 3)`` frame pixels with **larger z = closer**.

Modules: :mod:`.plan` (settings, identities, clips), :mod:`.sources` (the photographs),
:mod:`.geometry` (the 3D fit and mesh of an identity), :mod:`.live`, :mod:`.attacks` (print and
replay), :mod:`.camera`, :mod:`.generator` (:func:`~.generator.generate`, used by the ``synth``
CLI, writes the videos and the manifest; the other modules do no file output).
"""
