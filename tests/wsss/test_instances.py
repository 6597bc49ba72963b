"""IRN's instances (Ahn et al., CVPR'19): the displacement and boundary losses teach a field that converges on each
object's centroid and boundaries between labels; the centroids split touching objects of one class that a
connected-components cut keeps whole; the walk over the boundary map stays inside its object."""
import numpy as np
import pytest
import torch

from wsseg.classes import IGNORE_INDEX
from wsseg.wsss.classifiers.inter_pixel_relations import InterPixelRelations, labels_on_grid, relation_losses
from wsseg.wsss.instance_grouping import centroid_clusters, converged_points, cut_along_boundaries, group_instances
from wsseg.wsss.instance_labels import MAX_INSTANCES, Instances, read_instances, stored_ids, write_instances
from wsseg.wsss.random_walk import boundary_affinities, pair_offsets, path_cells, random_walk

GROUPING = dict(centroid_iterations=100, centroid_threshold=1.0, walk_radius=3, beta=10.0, walk_reach=0.6,
                min_fragment=0.01, boundary_threshold=0.3)
CLASS = 5


def two_objects(touching: bool) -> np.ndarray:
    """(16, 24) instance numbers: two 8x8 squares of one class, touching or three columns apart."""
    ids = np.zeros((16, 24), np.int64)
    ids[4:12, 2:10] = 1
    ids[4:12, 10:18] = 2 if touching else 0
    if not touching:
        ids[4:12, 13:21] = 2
    return ids


def field_to_centroids(ids: np.ndarray) -> torch.Tensor:
    """The (2, h, w) displacement from each pixel to its instance's centroid (0 on the background)."""
    field = torch.zeros(2, *ids.shape)
    for number in np.unique(ids[ids > 0]):
        rows, cols = np.nonzero(ids == number)
        field[0, rows, cols] = torch.tensor(rows.mean() - rows, dtype=torch.float32)
        field[1, rows, cols] = torch.tensor(cols.mean() - cols, dtype=torch.float32)
    return field


def trained(labels: torch.Tensor, radius: int = 3, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Free boundary logits and displacements for (1, h, w) labels, fitted by the sum of IRN's losses alone."""
    torch.manual_seed(0)
    logits = torch.zeros(1, 1, *labels.shape[-2:], requires_grad=True)
    displacement = torch.zeros(1, 2, *labels.shape[-2:], requires_grad=True)
    optimizer = torch.optim.Adam([logits, displacement], lr=0.1)
    for _ in range(steps):
        loss = sum(relation_losses(logits, displacement, labels, radius).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(logits.detach())[0, 0], displacement.detach()[0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_a_line_passes_through_the_cells_within_one_cell_of_it_both_ends_included():
    assert path_cells((0, 3)) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    diagonal = set(path_cells((2, 2)))
    assert {(0, 0), (1, 1), (2, 2), (0, 1), (1, 0)} <= diagonal and not {(0, 2), (2, 0)} & diagonal
    assert {(0, 0), (3, -1)} <= set(path_cells((3, -1)))


def test_boundary_affinities_are_low_across_a_wall_and_high_beside_it():
    boundary = torch.zeros(1, 8, 8)
    boundary[0, :, 4] = 0.9
    affinities = boundary_affinities(boundary, 2)[0]
    across = pair_offsets(2).index((0, 2))
    assert affinities[across, 3, 2] == pytest.approx(0.1), "onto the wall"
    assert affinities[across, 3, 3] == pytest.approx(0.1), "over it"
    assert affinities[across, 3, 5] == pytest.approx(1.0), "beside it"
    assert affinities[across, 3, 6] == 0, "the neighbour lies outside the grid"


def test_the_walk_over_boundary_affinities_stays_on_its_side_of_a_wall():
    boundary = torch.zeros(1, 8, 8)
    boundary[0, :, 4] = 0.95
    seeds = torch.zeros(1, 8, 8)
    seeds[0, 3, 1] = 1.0
    walked = random_walk(seeds, boundary_affinities(boundary, 2)[0], radius=2, beta=10.0, steps=64)[0]
    assert walked[:, :4].min() > 0.5 and walked[:, 5:].max() < 0.01


def test_the_displacement_loss_teaches_a_field_that_converges_on_each_objects_centroid():
    ids = two_objects(touching=False)
    labels = torch.from_numpy(np.where(ids > 0, CLASS, 0))[None]
    _, displacement = trained(labels)
    points = converged_points(displacement - displacement.mean(dim=(1, 2), keepdim=True), 100)
    for number in (1, 2):
        rows, cols = np.nonzero(ids == number)
        landed = points[:, rows, cols]
        assert (landed.amax(dim=1) - landed.amin(dim=1)).max() < 1.0, f"object {number} converges on one point"
        assert landed.mean(dim=1).tolist() == pytest.approx([rows.mean(), cols.mean()], abs=1.0)


def test_the_boundary_loss_raises_boundaries_between_labels_and_keeps_them_low_inside():
    labels = torch.zeros(1, 12, 12, dtype=torch.long)
    labels[0, :, 6:] = CLASS
    labels[0, 0, 0] = IGNORE_INDEX
    boundary, _ = trained(labels)
    assert boundary[:, 5:7].amax(dim=1).min() > 0.5, "where the labels meet, on every row"
    assert boundary[:, :3].max() < 0.2 and boundary[:, 9:].max() < 0.2


def test_centroids_split_two_touching_objects_of_one_class_that_components_keep_whole():
    ids = two_objects(touching=True)
    extent = np.where(ids > 0, CLASS, 0).astype(np.uint8)
    scores = torch.from_numpy((ids > 0).astype(np.float32))[None]
    instances = group_instances(scores, [CLASS], extent, field_to_centroids(ids), torch.zeros(ids.shape), GROUPING)
    assert instances.classes == (CLASS, CLASS)
    found = {tuple(np.unique(ids[instances.ids == number])) for number in (1, 2)}
    assert found == {(1,), (2,)}


def test_a_boundary_line_splits_touching_objects_that_one_centroid_keeps_together():
    ids = two_objects(touching=True)
    extent = np.where(ids > 0, CLASS, 0).astype(np.uint8)
    scores = torch.from_numpy((ids > 0).astype(np.float32))[None]
    boundary = torch.zeros(ids.shape)
    boundary[:, 10] = 0.9  # where the two squares meet
    one_centroid = field_to_centroids(np.where(ids > 0, 1, 0))
    instances = group_instances(scores, [CLASS], extent, one_centroid, boundary, GROUPING)
    assert instances.classes == (CLASS, CLASS)
    ious = sorted(iou(instances.ids == number, ids == object_id) for number in (1, 2) for object_id in (1, 2))
    assert max(ious[:2]) < 0.1 and min(ious[2:]) > 0.8, "each instance one square, but for the wall's own cells"
    uncut = group_instances(scores, [CLASS], extent, one_centroid, boundary, dict(GROUPING, boundary_threshold=None))
    assert len(uncut.classes) == 1


def test_the_boundary_cut_leaves_boundary_cells_to_no_cluster_and_keeps_a_map_without_any_whole():
    clusters = torch.zeros(4, 6, dtype=torch.long)
    boundary = torch.zeros(4, 6)
    boundary[:, 3] = 0.5
    parts = cut_along_boundaries(clusters, boundary, 0.3)
    assert parts.shape == (2, 4, 6) and parts[:, :, 3].sum() == 0 and parts.sum(dim=0)[:, [0, 1, 2, 4, 5]].all()
    assert cut_along_boundaries(clusters, torch.ones(4, 6), 0.3).shape == (1, 4, 6)


def test_a_class_seeds_only_where_the_extent_is_that_class():
    ids = two_objects(touching=False)
    extent = np.where(ids == 1, CLASS, np.where(ids == 2, CLASS + 1, 0)).astype(np.uint8)
    scores = torch.ones(2, *ids.shape)  # both class maps high everywhere
    instances = group_instances(scores, [CLASS, CLASS + 1], extent, torch.zeros(2, *ids.shape),
                                torch.zeros(ids.shape), GROUPING)
    assert sorted(instances.classes) == [CLASS, CLASS + 1]
    for class_index, _, mask in instances.masks():
        assert (extent[mask] == class_index).all()


def test_pixels_whose_walks_end_in_one_converging_region_share_a_cluster():
    ids = two_objects(touching=True)
    clusters = centroid_clusters(field_to_centroids(ids), 100, 1.0)
    assert len(np.unique(clusters[ids == 1])) == 1 and len(np.unique(clusters[ids == 2])) == 1
    assert clusters[ids == 1][0] != clusters[ids == 2][0]


def test_instances_cover_the_extent_and_leave_its_uncertain_pixels_unassigned():
    ids = two_objects(touching=False)
    extent = np.where(ids > 0, CLASS, 0).astype(np.uint8)
    extent[0, 0] = IGNORE_INDEX
    scores = torch.from_numpy((ids > 0).astype(np.float32))[None]
    instances = group_instances(scores, [CLASS], extent, field_to_centroids(ids), torch.zeros(ids.shape), GROUPING)
    assert ((instances.ids > 0) & (instances.ids < 255) == (extent == CLASS)).all()
    assert instances.ids[0, 0] == 255 and len(instances.scores) == 2


def test_a_fragment_under_the_smallest_share_scores_zero():
    ids = two_objects(touching=False)
    extent = np.where(ids > 0, CLASS, 0).astype(np.uint8)
    extent[14, 22] = CLASS  # one stray pixel: under 1 % of the image
    scores = torch.from_numpy((extent > 0).astype(np.float32))[None]
    instances = group_instances(scores, [CLASS], extent, field_to_centroids(ids), torch.zeros(ids.shape), GROUPING)
    assert sorted(instances.scores)[0] == 0.0 and min(instances.scores[:2]) > 0


def test_the_relation_branches_take_any_backbones_stages_and_learn_on_its_grid():
    stages = [torch.randn(2, width, side, side) for width, side in ((8, 16), (16, 8), (32, 4), (32, 4))]
    branches = InterPixelRelations([8, 16, 32, 32], boundary_channels=4, displacement_channels=8)
    boundary, displacement = branches(stages)
    assert boundary.shape == (2, 1, 16, 16) and displacement.shape == (2, 2, 16, 16)
    labels = labels_on_grid(torch.zeros(2, 64, 64, dtype=torch.long), (16, 16))
    assert labels.shape == (2, 16, 16)
    assert torch.isfinite(sum(relation_losses(boundary, displacement, labels, 2).values()))
    assert branches.displacement_mean.abs().sum() > 0, "training tracks the field's mean, which inference takes off"
    branches.eval()
    assert torch.allclose(branches(stages)[1], displacement - branches.displacement_mean.view(1, 2, 1, 1))


def test_instance_files_round_trip_and_number_instances_by_falling_score(tmp_path):
    from wsseg.store import open_store

    masks = [np.zeros((4, 5), bool) for _ in range(3)]
    for index, mask in enumerate(masks):
        mask[index, :] = True
    instances = Instances.from_masks([(0.2, 3, masks[0]), (0.9, 7, masks[1]), (0.5, 3, masks[2])],
                                     unassigned=np.eye(4, 5, k=-3, dtype=bool))
    assert instances.classes == (7, 3, 3) and instances.scores == (0.9, 0.5, 0.2)
    assert instances.ids[1, 0] == 1 and instances.ids[3, 0] == 255
    store = open_store(tmp_path)
    write_instances(store, "a", instances)
    again = read_instances(store, "a")
    assert np.array_equal(again.ids, instances.ids) and again.classes == instances.classes
    assert stored_ids(store) == {"a"}


def test_instances_past_one_byte_are_left_unassigned():
    found = [(float(index), 1, np.eye(1, 300, k=index, dtype=bool)) for index in range(300)]
    instances = Instances.from_masks(found, unassigned=np.zeros((1, 300), bool))
    assert len(instances.classes) == MAX_INSTANCES
    assert (instances.ids == 255).sum() == 300 - MAX_INSTANCES
