//! Bag, equipment and gold, with the pure operations the world's requests use.

use serde::{Deserialize, Serialize};

use crate::events::Reject;
use crate::items::{EquipSlot, Item, ItemId};

/// Bag capacity in items.
pub const BAG_SLOTS: usize = 40;

/// What is worn, one optional item per [`EquipSlot`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Equipment {
    slots: [Option<Item>; 6],
}

impl Equipment {
    /// The item in `slot`.
    pub fn get(&self, slot: EquipSlot) -> Option<&Item> {
        self.slots[slot.index()].as_ref()
    }

    /// The wielded weapon.
    pub fn weapon(&self) -> Option<&Item> {
        self.get(EquipSlot::Weapon)
    }

    /// Every worn item in slot order.
    pub fn items(&self) -> impl Iterator<Item = &Item> + '_ {
        self.slots.iter().flatten()
    }

    /// Every `(slot, item)` pair in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (EquipSlot, &Item)> + '_ {
        EquipSlot::ALL
            .iter()
            .zip(self.slots.iter())
            .filter_map(|(s, i)| i.as_ref().map(|i| (*s, i)))
    }

    /// Puts `item` in `slot`, returning what was there.
    pub fn set(&mut self, slot: EquipSlot, item: Option<Item>) -> Option<Item> {
        std::mem::replace(&mut self.slots[slot.index()], item)
    }
}

/// A character's belongings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Inventory {
    /// Carried items, at most [`BAG_SLOTS`], in pick-up order.
    pub bag: Vec<Item>,
    /// Worn items.
    pub equipment: Equipment,
    /// Gold.
    pub gold: u64,
}

impl Inventory {
    /// Whether the bag has room.
    pub fn has_room(&self) -> bool {
        self.bag.len() < BAG_SLOTS
    }

    /// The bag item with id `id`.
    pub fn bag_item(&self, id: ItemId) -> Option<&Item> {
        self.bag.iter().find(|i| i.id == id)
    }

    /// Adds `item` to the bag, or hands it back if the bag is full.
    pub fn add(&mut self, item: Item) -> Result<(), Item> {
        if self.has_room() {
            self.bag.push(item);
            Ok(())
        } else {
            Err(item)
        }
    }

    /// Removes the bag item with id `id`.
    pub fn take(&mut self, id: ItemId) -> Result<Item, Reject> {
        let i = self
            .bag
            .iter()
            .position(|i| i.id == id)
            .ok_or(Reject::NoSuchItem)?;
        Ok(self.bag.remove(i))
    }

    /// Equips bag item `id` for a character of `level`; a previously worn item takes
    /// its place in the bag. Returns the slot and the id of the swapped-out item.
    pub fn equip(&mut self, id: ItemId, level: u8) -> Result<(EquipSlot, Option<ItemId>), Reject> {
        let i = self
            .bag
            .iter()
            .position(|i| i.id == id)
            .ok_or(Reject::NoSuchItem)?;
        let item = &self.bag[i];
        let base = item.base_def().ok_or(Reject::WrongSlot)?;
        let slot = base.slot.ok_or(Reject::WrongSlot)?;
        if level < base.req_level {
            return Err(Reject::LevelTooLow);
        }
        let item = self.bag.remove(i);
        let old = self.equipment.set(slot, Some(item));
        let old_id = old.as_ref().map(|o| o.id);
        if let Some(old) = old {
            self.bag.insert(i, old);
        }
        Ok((slot, old_id))
    }

    /// Moves the item in `slot` to the bag.
    pub fn unequip(&mut self, slot: EquipSlot) -> Result<ItemId, Reject> {
        if self.equipment.get(slot).is_none() {
            return Err(Reject::SlotEmpty);
        }
        if !self.has_room() {
            return Err(Reject::BagFull);
        }
        match self.equipment.set(slot, None) {
            Some(item) => {
                let id = item.id;
                self.bag.push(item);
                Ok(id)
            }
            None => Err(Reject::SlotEmpty),
        }
    }

    /// Every item id held, bag first then equipment.
    pub fn item_ids(&self) -> impl Iterator<Item = ItemId> + '_ {
        self.bag
            .iter()
            .map(|i| i.id)
            .chain(self.equipment.items().map(|i| i.id))
    }

    /// Whether the inventory is internally consistent: bag within capacity, every worn
    /// item in its own slot, no id twice.
    pub fn is_valid(&self) -> bool {
        if self.bag.len() > BAG_SLOTS {
            return false;
        }
        if self
            .equipment
            .iter()
            .any(|(slot, item)| item.slot() != Some(slot))
        {
            return false;
        }
        let mut ids: Vec<ItemId> = self.item_ids().collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        ids.len() == n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::items::{Item, MINOR_HEALING_POTION, SHORT_SWORD};

    #[test]
    fn equip_swap_unequip() {
        let mut inv = Inventory::default();
        let a = Item::common(ItemId(1), SHORT_SWORD, 1);
        let b = Item::common(ItemId(2), SHORT_SWORD, 1);
        let p = Item::common(ItemId(3), MINOR_HEALING_POTION, 1);
        assert!(inv.add(a).is_ok() && inv.add(b).is_ok() && inv.add(p).is_ok());
        assert_eq!(inv.equip(ItemId(1), 1), Ok((EquipSlot::Weapon, None)));
        assert_eq!(
            inv.equip(ItemId(2), 1),
            Ok((EquipSlot::Weapon, Some(ItemId(1))))
        );
        assert_eq!(inv.equip(ItemId(3), 1), Err(Reject::WrongSlot));
        assert_eq!(inv.equip(ItemId(9), 1), Err(Reject::NoSuchItem));
        assert_eq!(inv.unequip(EquipSlot::Helm), Err(Reject::SlotEmpty));
        assert_eq!(inv.unequip(EquipSlot::Weapon), Ok(ItemId(2)));
        assert!(inv.is_valid());
        while inv.has_room() {
            let n = inv.bag.len() as u128 + 100;
            assert!(inv.add(Item::common(ItemId(n), SHORT_SWORD, 1)).is_ok());
        }
        assert_eq!(inv.equip(ItemId(1), 1), Ok((EquipSlot::Weapon, None)));
        assert!(inv.add(Item::common(ItemId(999), SHORT_SWORD, 1)).is_ok());
        assert_eq!(inv.unequip(EquipSlot::Weapon), Err(Reject::BagFull));
    }
}
