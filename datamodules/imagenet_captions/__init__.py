"""ImageNet-Captions (seed 000): the release reader (:mod:`.reader`), the relevance training set
built from it (:mod:`.relevance_dataset`) and two DataModules: caption + class-sentence items for
the relevance classifier (:mod:`.relevance`) and images + captions with relevance weights
(:mod:`.captioned_images`)."""
